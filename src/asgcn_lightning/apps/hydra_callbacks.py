"""Hydra callbacks: the output folder checked before Hydra makes it; what a sweep needs before its first job and
after its last."""

from __future__ import annotations

import copy
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from asgcn_lightning.apps.sweep_summary import write_summary
from asgcn_lightning.atomic import folder_problem
from asgcn_lightning.errors import UserError

log = logging.getLogger(__name__)


# launchers that hand the jobs to a scheduler: the command they cannot start jobs without
SCHEDULER_COMMANDS = {"SlurmLauncher": "sbatch"}


class OutputFolderCheck(Callback):
    """A run or sweep folder that cannot be made is one line naming it and why, not Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        if not HydraConfig.initialized():  # the folder names may use ${hydra:...}; Hydra sets it only for the job
            HydraConfig.instance().set_config(copy.deepcopy(config))
        folder = Path(str(OmegaConf.select(config, key)))
        problem = folder_problem(folder)
        if problem:
            print(f"error: {key}={folder}: {problem}", file=sys.stderr)
            sys.exit(2)


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
