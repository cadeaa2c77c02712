"""Transfer learning: start a model from a checkpoint trained on another data set.

Configured by the ``transfer`` node (``configs/transfer/*.yaml``, selected with ``transfer=<mode>``;
see ``docs/transfer.md``) and applied by :func:`asgcn_lightning.apps.components.build_module`:

* ``feature_extraction`` — every source weight except the classifier; the whole network but the new
  ``head.fc`` is frozen and stays in inference mode (batch-norm statistics and dropout fixed);
* ``finetune`` — the same weights; the modules named in ``transfer.freeze`` are frozen, the rest of
  the backbone trains at ``backbone_lr_scale`` × the configured learning rate, the new head at it;
* ``architecture_only`` — no weights: the configured network is checked tensor by tensor against the
  source's, so the run is the from-scratch control of a transfer experiment.

The classifier is always new (``num_class`` comes from the target data set). Joint layouts may
differ: the only layout-dependent tensors of the network are the data batch norm (one entry per
joint and channel) and the edge importance masks (S-link subset × joint × joint); they are mapped
joint by joint (by name, by index or by an explicit table), and target joints without a source joint
keep their initial values. An edge importance scales one S-link subset — a hop distance and, in the
spatial partition, "towards" or "away from" the layout's centre — so it carries over only where the
joint pair lies in the same subset in both layouts; with another centre or other bones many pairs
change subset, and theirs restart from initialisation. Every other tensor must match the source's
shape (``strict``), so a transfer never silently starts from a half-initialised backbone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.optim import Optimizer

from asgcn_lightning.errors import UserError
from asgcn_lightning.models.card import CARD_KEY, ModelCard, card_of, read_checkpoint
from asgcn_lightning.schemas import TransferMode
from asgcn_lightning.skeleton.layouts import Layout, make_layout

log = logging.getLogger(__name__)

CLASSIFIER_PREFIX = "head.fc."
BACKBONE_GROUP = "backbone"


# -- the source ---------------------------------------------------------------------------------------
@dataclass
class SourceCheckpoint:
    """A trained checkpoint's network weights and, when it carries one, its model card."""

    path: Path
    state: dict[str, torch.Tensor]
    card: ModelCard | None

    @classmethod
    def load(cls, path: str | Path) -> SourceCheckpoint:
        path = Path(path)
        checkpoint = read_checkpoint(path, what="transfer.checkpoint")
        network = {}
        for key, value in checkpoint["state_dict"].items():
            if key.startswith("network."):
                # a compiled network's weights sit under _orig_mod; the modules are the same
                network[key.removeprefix("network.").replace("_orig_mod.", "")] = value
        if not network:
            raise UserError(f"transfer.checkpoint {path}: no network weights (keys 'network.*') in its state_dict")
        card = card_of(checkpoint, path) if CARD_KEY in checkpoint else None  # older checkpoints: weights only
        return cls(path, network, card)

    def layout(self, spec: Mapping[str, Any] | None) -> Layout | None:
        """The source's joint layout: ``spec`` if given, else its model card's, else unknown."""
        if spec is None and self.card is not None:
            return self.card.skeleton
        if spec is None:
            return None
        return make_layout(**OmegaConf.to_container(spec, resolve=True)) if isinstance(spec, DictConfig) \
            else make_layout(**spec)


# -- joint mapping ------------------------------------------------------------------------------------
def joint_mapping(source: Layout, target: Layout, spec: str | Mapping[Any, Any] | None = None,
                  what: str = "transfer.joint_map") -> dict[int, int]:
    """``{target joint: source joint}`` (0-based): where each joint of ``target`` is taken from.

    ``spec`` is ``None``/``"name"`` (joints with the same name; identity for the same layout),
    ``"index"`` (joint ``j`` to joint ``j`` up to the smaller layout) or a table
    ``{target joint: source joint}`` by name or 0-based index. ``what`` names the config key in errors
    (transfer maps checkpoint → new network, cross-data-set evaluation target data → model).
    """
    if spec is None or spec == "name":
        mapping = {t: source.joints.index(name) for t, name in enumerate(target.joints) if name in source.joints}
        if not mapping:
            raise UserError(f"layouts {source.name!r} and {target.name!r} share no joint names; give "
                            f"{what} as 'index' or a table {{{target.name} joint: {source.name} joint}}")
        return mapping
    if spec == "index":
        return {j: j for j in range(min(source.num_joints, target.num_joints))}
    if not isinstance(spec, Mapping):
        raise UserError(f"{what} {spec!r}: use 'name', 'index' or a table "
                        f"{{{target.name} joint: {source.name} joint}}")

    def resolve(layout: Layout, joint: Any) -> int:
        if isinstance(joint, int) or (isinstance(joint, str) and joint.isdigit()):
            if not 0 <= int(joint) < layout.num_joints:
                raise UserError(f"{what}: joint {joint} is outside 0..{layout.num_joints - 1} "
                                f"of layout {layout.name!r}")
            return int(joint)
        if str(joint) not in layout.joints:
            raise UserError(f"{what}: layout {layout.name!r} has no joint {joint!r}; it has {list(layout.joints)}")
        return layout.joints.index(str(joint))

    mapping = {resolve(target, t): resolve(source, s) for t, s in spec.items()}
    if not mapping:
        raise UserError(f"{what} is empty")
    return mapping


def is_layout_dependent(key: str) -> bool:
    """Tensors indexed by joint: the data batch norm (joint × channel) and the edge importances (joint × joint)."""
    return key.startswith("data_bn.") or ".data_bn." in key or key.endswith("edge_importance")


def map_joints(key: str, source: torch.Tensor, target: torch.Tensor, mapping: Mapping[int, int],
               joints: tuple[int, int], links: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor | None:
    """``target`` with its mapped joints' entries taken from ``source``; ``None`` when the shapes cannot map.

    ``joints`` is (source, target) joint count; the data batch norm's features are joint-major (``v·C + c``).
    ``links`` are the (source, target) S-links ``(K, V, V)`` an edge importance multiplies: its entry
    ``[k, i, j]`` comes over only where the pair is a link of subset ``k`` in both layouts, because
    elsewhere the source value was never trained (or means another relation to the centre).
    """
    if key.endswith("num_batches_tracked"):
        return source.clone()
    out = target.detach().clone()
    rows, cols = torch.tensor(list(mapping)), torch.tensor(list(mapping.values()))
    if key.endswith("edge_importance"):
        if source.shape[0] != target.shape[0] or source.shape[1:] != (joints[0], joints[0]) or links is None:
            return None  # another number of S-link subsets
        pairs, source_pairs = (slice(None), rows[:, None], rows[None, :]), (slice(None), cols[:, None], cols[None, :])
        same_subset = (links[0][source_pairs] != 0) & (links[1][pairs] != 0)
        out[pairs] = torch.where(same_subset, source[source_pairs].to(out.dtype), out[pairs])
        return out
    if source.dim() != 1 or source.numel() % joints[0] or target.numel() % joints[1] \
            or source.numel() // joints[0] != target.numel() // joints[1]:
        return None  # another number of input channels
    out.view(joints[1], -1)[rows] = source.view(joints[0], -1)[cols].to(out.dtype)
    return out


# -- weights ------------------------------------------------------------------------------------------
@dataclass
class TransferReport:
    """What a transfer did, tensor by tensor: logged, and asserted on by the tests."""

    loaded: list[str] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    links_reset: int = 0

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded", f"{len(self.mapped)} joint-mapped"]
        if self.links_reset:
            parts.append(f"{self.links_reset} edge importances of mapped joint pairs kept at initialisation "
                         "(the pair is in another S-link subset in the source layout: other centre or bones)")
        if self.skipped:
            parts.append(f"{len(self.skipped)} kept at initialisation ({_head(sorted(self.skipped))})")
        if self.frozen:
            parts.append(f"frozen: {', '.join(self.frozen)}")
        if self.unused:
            parts.append(f"{len(self.unused)} source tensors unused ({_head(self.unused)})")
        return "; ".join(parts)


def _head(keys: list[str], count: int = 4) -> str:
    return ", ".join(keys[:count]) + (f" (+{len(keys) - count} more)" if len(keys) > count else "")


def links_reset(mapping: Mapping[int, int], source_links: torch.Tensor, target_links: torch.Tensor) -> int:
    """How many S-links between mapped target joints have no link of the same subset between their source joints."""
    rows, cols = torch.tensor(list(mapping)), torch.tensor(list(mapping.values()))
    target = target_links[:, rows[:, None], rows[None, :]] != 0
    return int((target & (source_links[:, cols[:, None], cols[None, :]] == 0)).sum())


def _links_of(key: str, links: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """The S-links buffer the edge importance ``key`` multiplies: that of the (sub)network owning it."""
    owners = [name for name in links if key.startswith(name.removesuffix("s_links"))]
    return links[max(owners, key=len)] if owners else None


def compare_tensors(network: nn.Module, source: Mapping[str, torch.Tensor], mapping: Mapping[int, int] | None,
                    joints: tuple[int, int], source_links: Mapping[str, torch.Tensor] | None = None,
                    ) -> tuple[dict[str, torch.Tensor], TransferReport]:
    """The tensors to load into ``network`` (all but the classifier) and why any others cannot come over.

    ``mapping`` is ``None`` when source and target share the layout (plain copies); ``joints`` is the
    (source, target) joint count; ``source_links`` the S-link buffers of the network on the source
    layout, by name (``s_links``, ``backbone.s_links``), needed to map edge importances.
    """
    report = TransferReport()
    values: dict[str, torch.Tensor] = {}
    own = network.state_dict()
    target_links = {name: b for name, b in network.named_buffers() if name.endswith("s_links")}
    for key, target in own.items():
        if key.startswith(CLASSIFIER_PREFIX):
            report.skipped[key] = "new classifier"
        elif key not in source:
            report.skipped[key] = "not in the source"
        elif mapping is not None and is_layout_dependent(key):
            links = None
            if key.endswith("edge_importance") and source_links is not None:
                pair = _links_of(key, source_links), _links_of(key, target_links)
                links = pair if pair[0] is not None and pair[1] is not None else None
            mapped = map_joints(key, source[key], target, mapping, joints, links)
            if mapped is None:
                report.skipped[key] = f"cannot map {tuple(source[key].shape)} onto {tuple(target.shape)}"
            else:
                values[key] = mapped
                report.mapped.append(key)
                if links is not None:
                    report.links_reset += links_reset(mapping, *links)
        elif source[key].shape != target.shape:
            report.skipped[key] = f"shape {tuple(source[key].shape)} in the source, {tuple(target.shape)} here"
        else:
            values[key] = source[key]
            report.loaded.append(key)
    report.unused = sorted(k for k in source if k not in own and not k.startswith(CLASSIFIER_PREFIX))
    return values, report


# -- freezing and learning rates --------------------------------------------------------------------------
def _train_in_eval_mode(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def freeze(network: nn.Module, names: Iterable[str]) -> list[str]:
    """Freeze the named submodules (``data_bn``, ``blocks.0``, ``aim`` ...) and keep them in inference mode.

    A frozen module's ``train()`` is bound to inference mode, so the trainer switching the model to
    training leaves its batch-norm statistics and dropout alone: frozen means the outputs do not move.
    """
    frozen = []
    classifier = {id(p) for p in network.head.fc.parameters()}
    for name in names:
        try:
            module = network.get_submodule(str(name))
        except AttributeError:
            children = [n for n, _ in network.named_children()]
            raise UserError(f"transfer.freeze: the network has no module {name!r}; its modules are {children} "
                            "(index blocks as blocks.0, blocks.1, ...)") from None
        if any(id(p) in classifier for p in module.parameters()):
            raise UserError(f"transfer.freeze: {name!r} holds the new classifier head.fc, which starts from random "
                            "weights and has to train; freeze backbone modules only (data_bn, blocks.0, aim, ...), "
                            "or train the classifier alone with transfer=feature_extraction")
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        module.train = functools.partial(_train_in_eval_mode, module)
        module.eval()
        frozen.append(str(name))
    return frozen


class BackboneLearningRate:
    """Optimizer factory wrapper: the backbone's parameters at ``scale`` × the learning rate, the classifier at it.

    The groups are built when the module configures its optimisers, so the scheduler (created next)
    takes each group's rate as its base. The backbone group is named ``backbone``.
    """

    def __init__(self, factory: Callable[..., Optimizer], network: nn.Module, scale: float) -> None:
        self.factory, self.network, self.scale = factory, network, scale

    def __call__(self, params: Iterable[nn.Parameter]) -> Optimizer:
        classifier = {id(p) for p in self.network.head.fc.parameters()}
        params = list(params)
        groups = [{"params": [p for p in params if id(p) not in classifier], "name": BACKBONE_GROUP},
                  {"params": [p for p in params if id(p) in classifier], "name": "classifier"}]
        optimizer = self.factory([g for g in groups if g["params"]])
        for group in optimizer.param_groups:
            if group["name"] == BACKBONE_GROUP:
                group["lr"] *= self.scale
        return optimizer


# -- the whole step ---------------------------------------------------------------------------------------
@dataclass
class Transfer:
    """A validated ``transfer`` node and its source checkpoint; :meth:`apply` acts on a built module."""

    mode: str
    source: SourceCheckpoint
    freeze: list[str]
    backbone_lr_scale: float
    joint_map: str | dict[Any, Any] | None
    source_layout: dict[str, Any] | None
    strict: bool
    network_factory: Callable[..., nn.Module]  # the configured network class and settings, without the data's sizes

    def apply(self, module: nn.Module, layout: Layout) -> TransferReport:
        """Load, map, check and freeze the network of ``module`` (an ``ActionRecognitionModule``)."""
        network = module.network
        source_layout = self._source_layout(network, layout)
        mapping, source_links = None, None
        if source_layout is not None and (source_layout != layout or self.joint_map == "index"
                                          or isinstance(self.joint_map, Mapping)):
            mapping = joint_mapping(source_layout, layout, self.joint_map)
            unmapped = [layout.joints[j] for j in range(layout.num_joints) if j not in mapping]
            log.info("transfer: %d of %d target joints mapped from layout %s%s", len(mapping), layout.num_joints,
                     source_layout.name, f" (kept at initialisation: {', '.join(unmapped)})" if unmapped else "")
            # the S-links the source's edge importances were trained on: this network built on the source
            # layout, off the run's random stream (building it must not change what the run draws next)
            with torch.random.fork_rng(devices=[]):
                on_source = self.network_factory(num_class=1, layout=source_layout, in_channels=network.in_channels)
            source_links = {name: b for name, b in on_source.named_buffers() if name.endswith("s_links")}
        joints = (source_layout.num_joints if source_layout else layout.num_joints, layout.num_joints)
        values, report = compare_tensors(network, self.source.state, mapping, joints, source_links)
        problems = {k: why for k, why in report.skipped.items() if why != "new classifier"}
        if problems and self.strict:
            raise UserError(
                f"transfer from {self.source.path}: the configured network differs from the source's: "
                + "; ".join(f"{k}: {why}" for k, why in list(problems.items())[:5])
                + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
                + f"; use the source run's model config ({self._source_model_hint()}) or transfer.strict=false")
        if self.mode == "architecture_only":
            log.info("transfer (architecture_only) from %s: same architecture, fresh weights", self.source.path)
            return report
        network.load_state_dict(values, strict=False)
        names = [n for n, _ in network.named_children() if n != "head"] if self.mode == "feature_extraction" \
            else self.freeze
        report.frozen = freeze(network, names)
        if self.mode == "finetune" and self.backbone_lr_scale != 1.0:
            module.optimizer_factory = BackboneLearningRate(module.optimizer_factory, network,
                                                            self.backbone_lr_scale)
        log.info("transfer (%s) from %s: %s", self.mode, self.source.path, report.summary())
        return report

    def _source_layout(self, network: nn.Module, layout: Layout) -> Layout | None:
        """The source's layout; ``None`` (taken as the target's) when unknown but the joint counts agree."""
        source_layout = self.source.layout(self.source_layout)
        if source_layout is None and (isinstance(self.joint_map, Mapping)
                                      or not _same_joint_count(network, self.source.state)):
            raise UserError(f"transfer: cannot tell the joint layout of {self.source.path} (it carries no model "
                            "card); set transfer.source_layout, e.g. {name: ntu25}")
        return source_layout

    def _source_model_hint(self) -> str:
        if self.source.card is None:
            return "the checkpoint carries no model card"
        network = self.source.card.model.get("network", {})
        keys = ("channels", "strides", "max_hop", "use_alinks", "prediction_head")
        return ", ".join(f"{k}={network[k]}" for k in keys if k in network)


def check_stream(transfer: Transfer, stream: str | None) -> None:
    """Refuse weights trained on another input stream (joints vs bones vs motion): their features mean other things.

    ``transfer.strict=false`` lets a deliberate cross-stream fine-tune through with a warning. A source
    without a model card has no known stream and is not checked.
    """
    if transfer.source.card is None:
        return
    source = transfer.source.card.stream
    if source == (stream or "joint"):
        return
    message = (f"transfer from {transfer.source.path}: the source model reads the {source} stream, this run "
               f"feeds it {stream or 'joint'}; set stream={source}")
    if transfer.strict:
        raise UserError(message + " (or transfer.strict=false to fine-tune across streams on purpose)")
    log.warning("%s — going on because transfer.strict=false", message)


def _same_joint_count(network: nn.Module, source: Mapping[str, torch.Tensor]) -> bool:
    own = network.state_dict()
    return all(source[k].shape == own[k].shape for k in own if is_layout_dependent(k) and k in source)


def prepare_transfer(cfg: DictConfig) -> Transfer | None:
    """Load the source of ``cfg.transfer`` and check what its schema cannot; adjusts ``cfg.model.aim``.

    Returns ``None`` without a ``transfer`` node. Keys and modes are typed
    (:class:`asgcn_lightning.schemas.TransferConfig`, checked while Hydra composes). The AIM of a
    transferred network is already trained: its pretraining stage runs ``transfer.aim_pretrain_epochs``
    epochs (0 by default), and a frozen AIM gets no optimiser at all. Called before the module is built,
    so the logged config says so.
    """
    node = cfg.get("transfer")
    if not node:
        return None
    mode = TransferMode(node.mode).value
    if OmegaConf.is_missing(node, "checkpoint") or not node.checkpoint:
        raise UserError("transfer.checkpoint: give the source checkpoint (a .ckpt of another run)")
    scale = float(node.backbone_lr_scale)
    if scale <= 0:
        raise UserError(f"transfer.backbone_lr_scale must be positive, got {scale}")
    container = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    names = [str(n) for n in container.get("freeze") or []]
    if names and mode != "finetune":
        raise UserError(f"transfer.freeze={names} applies to transfer=finetune; {mode} "
                        + ("freezes the whole backbone itself" if mode == "feature_extraction" else "loads no weights"))
    transfer = Transfer(mode=mode, source=SourceCheckpoint.load(node.checkpoint), freeze=names,
                        backbone_lr_scale=scale, joint_map=container.get("joint_map"),
                        source_layout=container.get("source_layout"), strict=bool(node.strict),
                        network_factory=instantiate(cfg.model.network, _partial_=True))
    if mode != "architecture_only":
        check_stream(transfer, OmegaConf.select(cfg, "dataset.stream"))
    aim = cfg.model.get("aim")
    if mode != "architecture_only" and aim:
        aim_frozen = mode == "feature_extraction" or any(n == "aim" for n in transfer.freeze)
        with open_dict(cfg):
            if node.get("aim_pretrain_epochs") is not None:
                aim.pretrain_epochs = int(node.aim_pretrain_epochs)
            if aim_frozen:
                aim.pretrain_epochs, aim.optimizer, aim.scheduler = 0, None, None
    return transfer
