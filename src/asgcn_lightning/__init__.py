"""AS-GCN (Actional-Structural Graph Convolutional Networks) on PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
