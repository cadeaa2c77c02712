"""Classify skeleton sequences with a trained checkpoint: ``python predict.py ckpt_path=<ckpt> input=<what>``.

``input`` is a sample of the run's prepared store (``store:<index>`` or ``store:<sample name>``), an
NTU ``.skeleton`` file, a folder of OpenPose per-frame JSON (every video in it is classified) or a
video file (poses from the built-in BlazePose backend). The training run's own config (found
beside its ``checkpoints/`` folder) supplies the joint layout, the class names and the evaluation
transforms, so a sample is preprocessed exactly as in evaluation; pose input is tracked and
normalised the way the run's data set was prepared. With ``localise.enabled=true`` long inputs are
also cut into sliding windows and turned into a timeline of action segments
(:mod:`asgcn_lightning.apps.localise`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table
from torch import nn

from asgcn_lightning.apps.components import apply_process_settings, build_datamodule, build_module
from asgcn_lightning.apps.evaluate import adopt_run_config, load_weights
from asgcn_lightning.config import config_dir
from asgcn_lightning.data.datamodule import resolve_classes
from asgcn_lightning.data.formats.ntu_skeleton import read_ntu_skeleton
from asgcn_lightning.data.formats.openpose_json import (
    group_frame_files,
    layout_of_frame,
    read_openpose_sequence,
)
from asgcn_lightning.data.sources.ntu_bodies import actor_sequence
from asgcn_lightning.data.store import META_FILE, SkeletonStore
from asgcn_lightning.data.tracking import (
    normalise_by_extent,
    normalise_by_image_size,
    select_main_people,
    track_people,
)
from asgcn_lightning.data.transforms import Compose
from asgcn_lightning.data.video import VIDEO_SUFFIXES, output_size, probe_video, read_frames
from asgcn_lightning.errors import DataFormatError, UserError, exit_on_user_error
from asgcn_lightning.skeleton.layouts import Layout, make_layout

log = logging.getLogger(__name__)
NTU_FPS = 30.0  # Kinect v2 records skeletons at 30 frames per second
DEFAULT_VIDEO_SIZE = (-1, 256)  # the height the pose backend is fast at; the width keeps the aspect ratio
LAYOUT_NAMES = {"ntu25": "NTU Kinect v2 (ntu25, 3D)", "openpose25": "OpenPose BODY_25 (openpose25, 2D)",
                "coco18": "OpenPose COCO-18 (coco18, 2D)"}
Normaliser = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ModelSpec:
    """What sizes the network; the same properties :func:`build_module` reads from a data module."""

    num_class: int
    layout: Layout
    in_channels: int
    num_person: int
    class_names: list[str]


@dataclass
class Recogniser:
    """A trained network with everything needed to feed it raw sequences as evaluation did."""

    network: nn.Module
    spec: ModelSpec
    transform: Compose
    cfg: DictConfig
    ckpt_path: Path
    session: Any = None  # an onnxruntime.InferenceSession when the ONNX backend is selected

    @property
    def layout(self) -> Layout:
        return self.spec.layout

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    def model_input(self, sequence: np.ndarray) -> np.ndarray:
        """One ``(T, M, V, C)`` sequence → the network's ``(C, T', V, M)`` input (evaluation transforms)."""
        transformed = self.transform(np.array(sequence, dtype=np.float32), self.layout, np.random.default_rng(0))
        return np.ascontiguousarray(transformed.transpose(3, 0, 2, 1))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, classes)`` of model inputs ``(N, C, T, V, M)``, from PyTorch or onnxruntime."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.session is not None:
            return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]
        with torch.inference_mode():
            return self.network(torch.from_numpy(batch)).numpy()

    def probabilities(self, sequences: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of raw ``(T, M, V, C)`` sequences."""
        out = []
        for first in range(0, len(sequences), batch_size):
            batch = np.stack([self.model_input(s) for s in sequences[first:first + batch_size]])
            logits = self.logits(batch)
            out.append(torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_class), np.float32)


def compose_config(config_name: str = "predict", overrides: Sequence[str] = (),
                   output_dir: str | Path | None = None) -> DictConfig:
    """A config composed as the entry points compose theirs, for code outside a Hydra run (the pictures
    command, notebooks): paths relative to the repository root, outputs in ``output_dir``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    configs = Path(config_dir())
    output = Path(output_dir) if output_dir else configs.parent / "logs" / config_name
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"paths.root_dir={configs.parent}", f"paths.output_dir={output}",
                                              *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for the ${hydra:...} values some keys interpolate
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def with_run_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the data set, split and model of the run that wrote ``cfg.ckpt_path`` (when found)."""
    if not cfg.get("ckpt_path"):
        raise UserError("give the trained model: ckpt_path=<run>/checkpoints/last.ckpt")
    if not (cfg.get("use_run_config", True) and adopt_run_config(cfg, Path(cfg.ckpt_path))):
        log.warning("no training run config used for %s: the data set and model are this command's", cfg.ckpt_path)
    return cfg


def model_spec(cfg: DictConfig, hyper_parameters: dict[str, Any]) -> ModelSpec:
    """The network's sizes from the run's prepared store, or from the config and checkpoint without it.

    The store is what training saw, so it is preferred; a checkpoint copied to another machine
    still works from the data set config (layout, persons) and the class names it carries.
    """
    store_dir = Path(cfg.dataset.store_dir)
    if (store_dir / META_FILE).is_file() or cfg.dataset.get("auto_prepare"):
        dm = build_datamodule(cfg)
        return ModelSpec(dm.num_class, dm.layout, dm.in_channels, dm.num_person, list(dm.class_names))
    names = hyper_parameters.get("class_names")
    if not names:
        raise UserError(f"no prepared data at {store_dir} and no class names in the checkpoint; prepare the "
                        "data set of the training run first")
    layout = make_layout(**OmegaConf.to_container(cfg.dataset.layout, resolve=True))
    return ModelSpec(len(names), layout, int(cfg.dataset.get("channels", 3)), int(cfg.dataset.num_person),
                     list(names))


def load_recogniser(cfg: DictConfig, backend: str = "torch", onnx_path: str | Path | None = None) -> Recogniser:
    """The trained network of ``cfg.ckpt_path`` in evaluation mode, with the run's evaluation transforms.

    ``backend='onnx'`` runs the network exported to ONNX (``onnx_path``, exported next to the
    checkpoint when not given or older than it) with onnxruntime instead of PyTorch.
    """
    if backend not in ("torch", "onnx"):
        raise UserError(f"backend={backend!r}: choose torch or onnx")
    cfg = with_run_config(cfg)
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.is_file():
        raise UserError(f"{ckpt_path}: no such checkpoint")
    try:
        hyper_parameters = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    except Exception as error:  # torn or foreign files: load_weights words the same problem for the user
        raise UserError(f"{ckpt_path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    spec = model_spec(cfg, hyper_parameters)
    module = build_module(cfg, spec)  # type: ignore[arg-type]  # ModelSpec has the properties build_module reads
    load_weights(module, ckpt_path)
    network = module.network.eval()
    transform = Compose(instantiate(cfg.dataset.eval_transforms))
    recogniser = Recogniser(network, spec, transform, cfg, ckpt_path)
    if backend == "onnx":
        from asgcn_lightning.export import onnx_session

        recogniser.session = onnx_session(recogniser, onnx_path)
    return recogniser


# -- inputs ---------------------------------------------------------------------------------------------
@dataclass
class SkeletonInput:
    """One sequence to classify, in the form the run's store holds samples (before ``normalise``).

    Pose sources keep pixel coordinates in ``sequence`` and normalise each classified stretch on
    its own (``normalise``), as preparation normalised each stored window.
    """

    name: str
    source: str
    sequence: np.ndarray  # (T, M, V, C)
    fps: float
    label: str | None = None
    normalise: Normaliser | None = field(default=None, repr=False)

    def window(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Frames ``[start, end)`` ready for :meth:`Recogniser.model_input`."""
        part = self.sequence[start:end]
        return self.normalise(part) if self.normalise is not None else part


def require_layout(source_layout: str, recogniser: Recogniser, what: str | Path) -> None:
    """Refuse input whose joints mean something else than the model's (e.g. OpenPose into an NTU model)."""
    if source_layout != recogniser.layout.name:
        theirs = LAYOUT_NAMES.get(source_layout, source_layout)
        ours = LAYOUT_NAMES.get(recogniser.layout.name, recogniser.layout.name)
        raise UserError(f"{what}: its skeletons are {theirs}, but the model of {recogniser.ckpt_path} was trained "
                        f"on {ours}; use a checkpoint trained on {source_layout} data")


def pose_normaliser(cfg: DictConfig, frame_size: tuple[float, float] | None) -> Normaliser:
    """How pixel poses are centred: as the run's data set was prepared, unless ``pose.normalise`` says.

    ``extent`` centres on the people's box; ``frame`` divides by the frame size (``frame_size``,
    else the image size the data set was prepared with); ``[width, height]`` gives that size.
    """
    choice = (cfg.get("pose") or {}).get("normalise", "auto")
    prepared = _prepared_image_size(cfg)
    if choice == "auto":
        choice = "extent" if prepared is None else "frame"
    if choice == "extent":
        return normalise_by_extent
    if choice == "frame":
        size = frame_size or prepared
        if size is None:
            raise UserError("pose.normalise=frame needs the frame size: give pose.normalise=[width, height]")
    elif OmegaConf.is_list(choice) or isinstance(choice, list | tuple):
        size = tuple(choice)
    else:
        raise UserError(f"pose.normalise={choice!r}: choose auto, extent, frame or [width, height]")
    if len(size) != 2 or min(float(v) for v in size) <= 0:
        raise UserError(f"pose.normalise size {list(size)}: expected [width, height] in pixels")
    width, height = float(size[0]), float(size[1])
    return lambda poses: normalise_by_image_size(poses, (width, height))


def _prepared_image_size(cfg: DictConfig) -> tuple[float, float] | None:
    """The frame size the run's pose data was normalised by, or None when it was centred on the people."""
    prepare = cfg.dataset.get("prepare") or {}
    size = prepare.get("image_size") or prepare.get("size")
    if size is None or min(float(v) for v in size) < 1:
        return None
    return float(size[0]), float(size[1])


def video_size(cfg: DictConfig) -> tuple[int, int]:
    """Frame size for pose estimation: ``pose.size``, else the run's ``dataset.prepare.size``, else height 256."""
    size = (cfg.get("pose") or {}).get("size", "auto")
    if size in (None, "auto"):
        size = (cfg.dataset.get("prepare") or {}).get("size") or DEFAULT_VIDEO_SIZE
    return int(size[0]), int(size[1])


def people_to_sequence(frames: Sequence[np.ndarray], num_person: int, what: str | Path) -> np.ndarray:
    """Per-frame detections ``(P, V, 3)`` → the ``num_person`` main people ``(T, M, V, 3)``, tracked."""
    tracks = track_people(frames)
    if tracks.shape[1] == 0:
        raise UserError(f"{what}: nobody detected in any frame")
    return select_main_people(tracks, num_person)


def estimate_video_poses(path: str | Path, size: tuple[int, int], model_complexity: int = 1
                         ) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """BlazePose people ``(P, 25, 3)`` of every frame, the frame rate and the pose frame size."""
    from asgcn_lightning.data.pose_backend import BlazePoseBody25  # imports mediapipe: only for video

    info = probe_video(path)
    with BlazePoseBody25(model_complexity=model_complexity) as backend:
        frames = [backend(frame) for frame in read_frames(info, size)]
    return frames, info.fps, output_size(info, size)


def read_inputs(text: str, recogniser: Recogniser) -> list[SkeletonInput]:
    """What ``input=`` names, as sequences in the model's layout; anything else is a clear error."""
    text = str(text)
    if text.startswith("store:"):
        return [_store_input(text.removeprefix("store:"), recogniser)]
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (input is store:<index>, a .skeleton file, a folder of "
                        "OpenPose JSON or a video)")
    cfg, num_person = recogniser.cfg, recogniser.spec.num_person
    fps = float(cfg.get("fps") or NTU_FPS)
    if path.is_dir():
        return _openpose_inputs(path, recogniser, fps)
    if path.suffix.lower() == ".skeleton":
        require_layout("ntu25", recogniser, path)
        sequence, _ = actor_sequence(read_ntu_skeleton(path), max_actors=num_person)
        return [SkeletonInput(path.stem, str(path), sequence, NTU_FPS)]
    if path.suffix.lower() in VIDEO_SUFFIXES:
        require_layout("openpose25", recogniser, path)
        size = video_size(cfg)
        complexity = int((cfg.get("pose") or {}).get("model_complexity", 1))
        frames, video_fps, frame_size = estimate_video_poses(path, size, complexity)
        return [SkeletonInput(path.stem, str(path), people_to_sequence(frames, num_person, path), video_fps,
                              normalise=pose_normaliser(cfg, frame_size))]
    raise UserError(f"{path}: unknown input kind; give store:<index>, a .skeleton file, a folder of OpenPose JSON or "
                    f"a video ({', '.join(VIDEO_SUFFIXES)})")


def find_sample(store: SkeletonStore, key: str) -> int:
    """The index of ``store:<key>``: a sample index, or a sample name."""
    if key.isdigit():
        if not 0 <= int(key) < len(store):
            raise UserError(f"store:{key}: {store.root} holds samples 0..{len(store) - 1}")
        return int(key)
    names = [str(n) for n in store.index["name"]]
    if key not in names:
        raise UserError(f"store:{key}: no sample with that index or name in {store.root}")
    return names.index(key)


def _store_input(key: str, recogniser: Recogniser) -> SkeletonInput:
    store = SkeletonStore(recogniser.cfg.dataset.store_dir)
    index = find_sample(store, key)
    require_layout(store.meta.layout, recogniser, store.root)
    record = store.record(index)
    label = store.meta.class_names[record.label]
    classes = recogniser.cfg.dataset.get("classes")
    if classes and record.label not in resolve_classes(classes, store.meta.class_names):
        label += " (not among the model's classes)"
    return SkeletonInput(record.name, f"{store.root}[{index}]", store.sequence(index),
                         float(recogniser.cfg.get("fps") or NTU_FPS), label=label)


def _openpose_inputs(folder: Path, recogniser: Recogniser, fps: float) -> list[SkeletonInput]:
    grouped, _ = group_frame_files(folder.glob("*_keypoints.json"))
    if not grouped:
        raise UserError(f"{folder}: no OpenPose files (<video>_<frame:012d>_keypoints.json) in this folder")
    inputs = []
    for video, files in grouped.items():
        frames = read_openpose_sequence(files)
        detected = next((layout_of_frame(f) for f in frames if len(f)), None)
        if detected is None:
            raise DataFormatError(files[0].parent / f"{video}_*", "nobody detected in any frame")
        require_layout(detected, recogniser, folder / video)
        sequence = people_to_sequence(frames, recogniser.spec.num_person, folder / video)
        inputs.append(SkeletonInput(video, str(folder / video), sequence, fps,
                                    normalise=pose_normaliser(recogniser.cfg, None)))
    return inputs


# -- classification -------------------------------------------------------------------------------------
def top_k(probabilities: np.ndarray, class_names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most probable classes, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"rank": rank, "index": int(i), "class": class_names[i], "probability": float(probabilities[i])}
            for rank, i in enumerate(order, start=1)]


def classify(recogniser: Recogniser, item: SkeletonInput, k: int) -> dict[str, Any]:
    """The whole sequence as one sample: its top-``k`` classes."""
    probabilities = recogniser.probabilities([item.window()])[0]
    result: dict[str, Any] = {"input": item.source, "name": item.name, "frames": len(item.sequence),
                              "fps": item.fps, "top_k": top_k(probabilities, recogniser.class_names, k)}
    if item.label is not None:
        result["true_class"] = item.label
    return result


def print_prediction(result: dict[str, Any], console: Console) -> None:
    truth = f", true class: {result['true_class']}" if "true_class" in result else ""
    table = Table(title=result["name"], caption=f"{result['frames']} frames{truth}")
    for column in ("rank", "class", "probability"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in result["top_k"]:
        table.add_row(str(row["rank"]), row["class"], f"{row['probability']:.3f}")
    console.print(table)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Classify (and optionally localise actions in) every sequence ``cfg.input`` names; writes JSON."""
    if OmegaConf.is_missing(cfg, "input") or cfg.input in (None, ""):
        raise UserError("give what to classify: input=store:<index> | <file.skeleton> | <OpenPose folder> | <video>")
    apply_process_settings(cfg)
    recogniser = load_recogniser(cfg, cfg.get("backend", "torch"), cfg.get("onnx_path"))
    console = Console()
    results = []
    output = Path(cfg.output)
    for item in read_inputs(cfg.input, recogniser):
        result = classify(recogniser, item, int(cfg.top_k))
        print_prediction(result, console)
        if cfg.localise.enabled:
            from asgcn_lightning.apps.localise import localise_input

            result["timeline"] = localise_input(recogniser, item, cfg.localise, output, console)
        results.append(result)
    report = {"checkpoint": str(recogniser.ckpt_path), "layout": recogniser.layout.name,
              "class_names": recogniser.class_names, "predictions": results}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    console.print(f"predictions → {output}")
    return report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
