"""Figures and tables for the report and for ``python -m bestie show``."""
