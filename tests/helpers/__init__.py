"""Helpers the tests share (test modules import from here, never from each other):
parameter trees, the x64 switch, bit-exact comparison, the pieces several parity files
reuse (functional losses, lr schedules, RMSprop's overflow, TAM cases, the fast path's
kernel-vs-XLA runs, the torch optimizers' case-table and bad-hyperparameter tests), and
the scripts some tests run in a subprocess (``python -m tests.helpers.<name>``)."""
