"""Helpers the tests share: parameter trees, the x64 switch, and the scripts some tests
run in a subprocess (``python -m tests.helpers.<name>``)."""
