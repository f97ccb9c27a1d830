"""Minimal torch re-implementations written from the specs, for parity tests only."""
