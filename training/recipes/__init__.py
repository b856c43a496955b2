"""Training recipes: one small file of plain values each (see training/config.py)."""
