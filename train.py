"""Train a model: ``python train.py dataset=synthetic split=xsub model=asgcn trainer=cpu``."""

from asgcn_lightning.apps.train import main

if __name__ == "__main__":
    main()
