"""Continual-learning methods: plain-PyTorch cores (config dataclass + modules), each with its
Avalanche plug-in or strategy beside it and a registry entry (:mod:`cldf.methods.registry`)."""
