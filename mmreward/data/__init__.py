"""Datasets: preference pairs (media pairs for generators, labelled pair files for reward models) and prompt sets,
read from files into plain Python objects and tensors."""
