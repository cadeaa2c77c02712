"""Evaluate a checkpoint: ``python eval.py ckpt_path=logs/train/runs/.../checkpoints/last.ckpt``."""

from asgcn_lightning.apps.evaluate import main

if __name__ == "__main__":
    main()
