"""Classify skeleton sequences: ``python predict.py ckpt_path=<run>/checkpoints/last.ckpt input=store:0``."""

from asgcn_lightning.apps.predict import main

if __name__ == "__main__":
    main()
