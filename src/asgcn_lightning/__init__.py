"""AS-GCN (Actional-Structural Graph Convolutional Networks) on PyTorch Lightning + Hydra."""

from asgcn_lightning import runtime

runtime.start()  # before torch loads: OpenMP wait policy, quiet library chatter (runtime.py)

__version__ = "0.1.0"
