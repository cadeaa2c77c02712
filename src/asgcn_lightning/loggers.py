"""Loggers whose behaviour differs from Lightning's own in one documented way each."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger with ``offline`` that holds even when W&B was set up earlier in the process.

    Lightning implements ``offline`` by setting ``WANDB_MODE``, which wandb reads only at its first set-up in a
    process; after an earlier ``wandb.init`` (a notebook, a picture command, a previous run in a sweep) the
    run would try to log in instead. Passing the mode to ``wandb.init`` makes the choice stick.
    """

    def __init__(self, *args: Any, offline: bool = False, **kwargs: Any) -> None:
        if offline:
            kwargs["mode"] = "offline"
        super().__init__(*args, offline=offline, **kwargs)
