"""Data sets, paired transforms and training targets (centre, offset, weight)."""
