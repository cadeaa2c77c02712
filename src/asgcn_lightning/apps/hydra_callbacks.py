"""Hydra callbacks of ``train.py -m``: what a sweep needs before its first job and after its last."""

from __future__ import annotations

import copy
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from asgcn_lightning.apps.sweep_summary import write_summary
from asgcn_lightning.errors import UserError

log = logging.getLogger(__name__)


# launchers that hand the jobs to a scheduler: the command they cannot start jobs without
SCHEDULER_COMMANDS = {"SlurmLauncher": "sbatch"}


class SweepSetup(Callback):
    """Before the first job: make ``${hydra:...}`` resolvable and check that the launcher can start jobs.

    Hydra sets its config only when a job starts, but sweepers and launchers resolve
    ``hydra.sweep.dir`` before that; folder names built from ``${hydra:runtime.cwd}`` or
    ``${hydra:runtime.choices.model}`` would otherwise fail every ``-m`` run before its first job.
    A copy is registered, so the master config the sweeper works on stays writable. A scheduler's
    launcher on a machine without that scheduler would end in a library traceback; this says it in a line.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(copy.deepcopy(config))
        launcher = str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]
        command = SCHEDULER_COMMANDS.get(launcher)
        if command and shutil.which(command) is None:
            choice = HydraConfig.get().runtime.choices.get("hydra/launcher", launcher)
            print(f"error: hydra/launcher={choice} submits the jobs with `{command}`, which this machine does not "
                  "have: start the sweep on a login node of the cluster (docs/scaling.md)", file=sys.stderr)
            sys.exit(2)


class SweepSummary(Callback):
    """Write ``sweep_summary.json`` (and print its tables) in the sweep folder when the last job ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            write_summary(sweep_dir)
        except UserError as error:  # e.g. every job failed before writing its folder: the jobs' errors say why
            log.warning("no sweep summary: %s", error)
