"""Datasets: preference pairs and prompt sets, read from files into plain Python objects and tensors."""
