"""Continual-learning methods: plain-PyTorch cores (config dataclass + functions/modules)."""
