"""Preference datasets: pair files with per-dimension labels and ties."""
