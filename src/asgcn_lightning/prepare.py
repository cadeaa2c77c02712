"""Prepare a data set once: ``python -m asgcn_lightning.prepare dataset=ntu60 dataset.raw_dir=<folder>``.

Reads the source files named in the data set's config (``dataset.prepare``), writes the prepared
store to ``dataset.store_dir`` atomically and prints what was stored and which files were skipped.
A preparation that loses more than ``losses`` allows fails instead (docs/bad_input.md).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from asgcn_lightning.atomic import folder_problem
from asgcn_lightning.config import config_dir
from asgcn_lightning.data.provenance import prepare_store
from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.store import SkeletonStore, print_prepare_summary
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.runtime import show_library_chatter
from asgcn_lightning.schemas import LossPolicy


def prepare(cfg: DictConfig) -> SkeletonStore:
    if cfg.get("verbose"):
        show_library_chatter()
    if cfg.dataset.get("prepare") is None:
        raise UserError(f"data set {cfg.dataset.name!r} has no prepare step")
    store_dir = Path(cfg.dataset.store_dir)
    problem = folder_problem(store_dir)  # before any parsing
    if problem:
        raise UserError(f"dataset.store_dir={store_dir}: {problem}")
    policy = OmegaConf.to_object(cfg.losses) if "losses" in cfg else LossPolicy()
    if not 0 <= policy.max_skipped_share <= 1:
        raise UserError(f"losses.max_skipped_share={policy.max_skipped_share}: a share between 0 and 1")
    with loss_policy(policy):
        prepare_store(instantiate(cfg.dataset.prepare), store_dir)
    store = SkeletonStore(store_dir)
    print_prepare_summary(store)
    requested = cfg.dataset.get("layout")
    if requested is not None:  # taken by the sources that read a layout; the others decide their own
        store.layout(OmegaConf.to_container(requested) if OmegaConf.is_config(requested) else requested,
                     otherwise=f"the {cfg.dataset.name} source gives its joints in that layout, so the store "
                               "holds it; leave dataset.layout out, or give a variant of it (its joints, other "
                               "bones) to train.py")
    return store


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="prepare")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
