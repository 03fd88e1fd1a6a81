"""Thin Avalanche plug-ins around the plain-PyTorch method cores in :mod:`cldf.methods`."""
