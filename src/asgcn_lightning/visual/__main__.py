"""Pictures of data and models: ``python -m asgcn_lightning.visual <command> ...``.

=============  ================================================================================
``animate``    a skeleton sequence as an animated GIF (any layout): ``animate store:3 --store data/synthetic``,
               ``animate S001C001P001R001A001.skeleton``, ``animate <OpenPose JSON folder>``, ``animate <video>``
``alinks``     the A-links an AS-GCN infers for a sample: ``alinks store:3 --ckpt <ckpt>``
``importance`` per-class joint importance on a neutral skeleton: ``importance --ckpt <ckpt>``
``confusion``  the confusion matrix on the run's test split (``--ckpt``) or from ``eval.py``'s evaluation.json
``curves``     training curves of a run: ``curves logs/train/runs/<experiment>/<time>``
=============  ================================================================================

Each writes a PNG (the animation a GIF) to ``--out`` (default ``logs/visual/<command>.png``) and,
with ``--wandb`` (a new run, offline unless ``--wandb-mode online``) or ``--wandb-run-id <id>``
(that run, resumed), logs it to Weights & Biases too.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from asgcn_lightning.errors import DataFormatError, UserError, exit_on_user_error

if TYPE_CHECKING:  # loading a model imports Lightning and Hydra: only the commands that need one load them
    from asgcn_lightning.inference import LoadedModel
    from asgcn_lightning.inference.inputs import SkeletonInput


def _model(ckpt: str) -> LoadedModel:
    from asgcn_lightning.inference import load_model

    return load_model(ckpt)


def _pick(items: Sequence[SkeletonInput], name: str | None, what: str) -> SkeletonInput:
    """The input called ``name`` (an OpenPose folder holds several videos), else the first."""
    if name is None:
        return items[0]
    for item in items:
        if item.name == name:
            return item
    raise UserError(f"{what}: no sequence named {name!r}; there are {[i.name for i in items][:10]}")


def animate(args: argparse.Namespace) -> Path:
    from asgcn_lightning.inference.inputs import read_skeletons
    from asgcn_lightning.visual.animation import animate_sequence

    store_dir = args.store
    if args.ckpt and store_dir is None:
        store_dir = _model(args.ckpt).card.store_dir
    if args.sample.startswith("store:") and store_dir is None:
        raise UserError("a store: sample needs --store <prepared data folder> or --ckpt <checkpoint>")
    item = _pick(read_skeletons(args.sample, store_dir), args.video, args.sample)
    title = f"{item.name} ({item.label})" if item.label else item.name
    return animate_sequence(item.sequence, item.layout, args.out, fps=args.fps, max_frames=args.max_frames,
                            title=title)


def alinks(args: argparse.Namespace) -> Path:
    from asgcn_lightning.inference.inputs import read_inputs
    from asgcn_lightning.visual.alinks import save_alink_figure

    model = _model(args.ckpt)
    if getattr(model.network, "aim", None) is None:
        raise UserError(f"{args.ckpt}: this model infers no A-links (it was trained without use_alinks)")
    item = _pick(read_inputs(args.sample, model), args.video, args.sample)
    sample = model.model_input(item.window())
    probabilities = model.probabilities([item.window()])[0]
    best = int(np.argmax(probabilities))
    title = f"A-links of {item.name}: predicted {model.class_names[best]} ({probabilities[best]:.2f})"
    return save_alink_figure(model.network, sample, args.out, person=args.person, top_k=args.top_k, title=title)


def _test_split(model: LoadedModel, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs and labels of the test split of the model's data, at most ``per_class`` samples of each class."""
    datamodule = model.datamodule()
    datamodule.setup("test")
    labels = np.asarray(datamodule.test_set.labels)
    chosen = np.arange(len(labels))
    if per_class is not None:
        chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    inputs = [datamodule.test_set[int(i)][0] for i in chosen]
    if not inputs:
        raise UserError(f"the test split of {model.card.dataset_name} is empty")
    return torch.stack(inputs), torch.from_numpy(labels[chosen])


def importance(args: argparse.Namespace) -> Path:
    from asgcn_lightning.visual.importance import save_importance

    model = _model(args.ckpt)
    inputs, labels = _test_split(model, args.per_class)
    return save_importance(model.network, inputs, labels, model.layout, model.class_names, args.out)


def confusion(args: argparse.Namespace) -> Path:
    import matplotlib.pyplot as plt

    from asgcn_lightning.visual.confusion import confusion_figure

    if bool(args.ckpt) == bool(args.evaluation):
        raise UserError("confusion needs exactly one of --ckpt <checkpoint> or --evaluation <evaluation.json>")
    if args.evaluation:
        try:
            content = json.loads(Path(args.evaluation).read_text())
            matrix, names = np.asarray(content["confusion"]), list(content["class_names"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataFormatError(args.evaluation, f"not an evaluation.json of eval.py ({error})") from None
        title = f"confusion matrix of {content.get('checkpoint', args.evaluation)}"
    else:
        from asgcn_lightning.inference.evaluation import confusion_matrix

        model = _model(args.ckpt)
        inputs, labels = _test_split(model, None)
        predicted = torch.cat([torch.from_numpy(model.logits(inputs[i:i + 64].numpy())).argmax(dim=1)
                               for i in range(0, len(inputs), 64)])
        names = model.class_names
        matrix = confusion_matrix(predicted, labels, len(names)).numpy()
        title = f"test split of {model.card.dataset_name}"
    figure = confusion_figure(matrix, names, title=title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    plt.close(figure)
    return args.out


def curves(args: argparse.Namespace) -> Path:
    from asgcn_lightning.visual.curves import save_curves

    return save_curves(args.run, args.out)


def log_to_wandb(path: Path, args: argparse.Namespace) -> None:
    """Log the picture to a new W&B run (``--wandb``) or to an existing one (``--wandb-run-id``)."""
    import wandb

    run = wandb.init(project=args.wandb_project, id=args.wandb_run_id, resume="allow" if args.wandb_run_id else None,
                     mode=args.wandb_mode, dir=str(path.parent), job_type="pictures")
    media = wandb.Video(str(path), format="gif") if path.suffix == ".gif" else wandb.Image(str(path))
    run.log({f"pictures/{args.command}": media})
    run.finish()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m asgcn_lightning.visual", description=__doc__.splitlines()[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--out", type=Path, default=None, help="where to write the picture")
    shared.add_argument("--wandb", action="store_true", help="also log the picture to a new W&B run")
    shared.add_argument("--wandb-run-id", default=None, help="log to this existing W&B run (resumed)")
    shared.add_argument("--wandb-project", default="asgcn-lightning")
    shared.add_argument("--wandb-mode", default="offline", choices=("offline", "online"))
    sample_help = "store:<index or name>, a .skeleton file, a folder of OpenPose JSON or a video"

    cmd = commands.add_parser("animate", parents=[shared], help="a skeleton sequence as an animated GIF")
    cmd.add_argument("sample", help=sample_help)
    cmd.add_argument("--store", default=None, help="prepared data folder of a store: sample")
    cmd.add_argument("--ckpt", default=None, help="a checkpoint whose training data holds the store: sample")
    cmd.add_argument("--video", default=None, help="which video of an OpenPose folder (default: the first)")
    cmd.add_argument("--fps", type=float, default=15.0)
    cmd.add_argument("--max-frames", type=int, default=120, help="subsample longer sequences to this many frames")

    cmd = commands.add_parser("alinks", parents=[shared], help="the A-links inferred for a sample")
    cmd.add_argument("sample", help=sample_help)
    cmd.add_argument("--ckpt", required=True, help="an AS-GCN checkpoint (with A-links)")
    cmd.add_argument("--video", default=None, help="which video of an OpenPose folder (default: the first)")
    cmd.add_argument("--person", type=int, default=0)
    cmd.add_argument("--top-k", type=int, default=None, help="links drawn per type (default: one per joint)")

    cmd = commands.add_parser("importance", parents=[shared], help="per-class joint importance")
    cmd.add_argument("--ckpt", required=True)
    cmd.add_argument("--per-class", type=int, default=16, help="test samples per class to average over")

    cmd = commands.add_parser("confusion", parents=[shared], help="the confusion matrix")
    cmd.add_argument("--ckpt", default=None, help="evaluate this checkpoint on its run's test split")
    cmd.add_argument("--evaluation", default=None, help="the evaluation.json written by eval.py")

    cmd = commands.add_parser("curves", parents=[shared], help="training curves of a run")
    cmd.add_argument("run", help="a training run folder or its csv/metrics.csv")
    return top


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> Path:
    args = parser().parse_args(argv)
    if args.out is None:
        args.out = Path("logs") / "visual" / f"{args.command}{'.gif' if args.command == 'animate' else '.png'}"
    path = {"animate": animate, "alinks": alinks, "importance": importance, "confusion": confusion,
            "curves": curves}[args.command](args)
    print(f"{args.command} → {path}")
    if args.wandb or args.wandb_run_id:
        log_to_wandb(path, args)
    return path


if __name__ == "__main__":
    main()
