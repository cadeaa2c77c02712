"""Action recognition on video: ``python demo.py ckpt_path=<run>/checkpoints/last.ckpt input=<video or camera>``."""

from asgcn_lightning.apps.demo import main

if __name__ == "__main__":
    main()
