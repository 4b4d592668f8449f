"""Datasets: preference pairs (with per-dimension labels and ties) and prompt sets, read from files."""
