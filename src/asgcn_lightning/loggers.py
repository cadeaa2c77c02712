"""Loggers whose behaviour differs from Lightning's own in one documented way each."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger with ``offline`` that holds, and one run name per job of a sweep.

    Lightning implements ``offline`` by setting ``WANDB_MODE``, which wandb reads only at its first set-up in a
    process; after an earlier ``wandb.init`` (a notebook, a picture command, a previous run in a sweep) the
    run would try to log in instead. Passing the mode to ``wandb.init`` makes the choice stick.

    In a sweep (``-m``) every job shares the experiment name, which is also the W&B group; the job's
    number is added to the run name (``synthetic-xsub-asgcn_small #3``) so the dashboard tells them apart.

    Lightning always passes ``anonymous`` and ``resume="allow"`` to ``wandb.init``; wandb warns about the
    first (it has no effect) and, offline, about the second (it cannot resume there). Neither is passed
    when it does nothing.
    """

    def __init__(self, *args: Any, offline: bool = False, name: str | None = None, **kwargs: Any) -> None:
        if offline:
            kwargs["mode"] = "offline"
        if name is not None and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            name = f"{name} #{HydraConfig.get().job.num}"
        super().__init__(*args, offline=offline, name=name, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        if offline:
            self._wandb_init.pop("resume", None)
