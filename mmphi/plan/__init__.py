"""Plans of training runs (``--dry-run``): settings, processes, global batch, steps and memory per GPU, from
model configs and data counts only (no torch, no weights)."""
