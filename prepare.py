"""Prepare a data set: ``python prepare.py dataset=ntu60 dataset.raw_dir=/path/to/nturgb+d_skeletons``."""

from asgcn_lightning.prepare import main

if __name__ == "__main__":
    main()
