"""Every config group composes, and the objects it names exist; bad choices give clear errors."""

import itertools
import subprocess
import sys

import pytest
from conftest import CONFIG_DIR, REPO_ROOT
from hydra.utils import get_class, get_method
from omegaconf import DictConfig, ListConfig, OmegaConf


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _targets(node) -> list[str]:
    """All ``_target_`` strings in a config tree."""
    found = []
    if isinstance(node, DictConfig):
        for key in node:
            value = node._get_node(key)
            if key == "_target_":
                found.append(str(value))
            elif isinstance(value, DictConfig | ListConfig):
                found.extend(_targets(value))
    elif isinstance(node, ListConfig):
        for item in node:
            if isinstance(item, DictConfig | ListConfig):
                found.extend(_targets(item))
    return found


def _importable(target: str) -> None:
    try:
        get_class(target)
    except Exception:
        get_method(target)


GROUPS = ("dataset", "split", "model", "trainer", "logger", "callbacks", "stream")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_each_group_option_composes_and_names_real_classes(compose, group, option):
    cfg = compose([f"{group}={option}"])
    for target in _targets(cfg):
        _importable(target)


@pytest.mark.parametrize(("dataset", "split"), itertools.product(_options("dataset"), _options("split")))
def test_dataset_split_combinations_resolve_or_fail_clearly(compose, dataset, split):
    from hydra.utils import instantiate

    from asgcn_lightning.errors import find_user_error

    cfg = compose([f"dataset={dataset}", f"split={split}"])
    OmegaConf.to_container(cfg.dataset, resolve=True)  # every interpolation resolves
    values = cfg.dataset.get("split_values") or {}
    if split in ("random",) or values.get(split):
        assert callable(instantiate(cfg.split))
    else:
        with pytest.raises(Exception) as raised:
            instantiate(cfg.split)
        assert f"defines no {split} training values" in str(find_user_error(raised.value))


def test_model_configs_build_with_the_data_modules_sizes(compose):
    from asgcn_lightning.apps.components import build_datamodule, build_module

    cfg = compose(["model=tiny", "dataset.classes=[1,3,5]"])
    module = build_module(cfg, build_datamodule(cfg))
    assert module.num_class == 3 and module.class_names == ["wave right hand", "raise both arms", "kick right leg"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_cfg_job_prints_the_composed_config():
    result = _run("train.py", "--cfg", "job", "model=tiny", "split=xview")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.split.name == "xview" and cfg.model.network.channels == [16, 16, 32]


def test_unknown_group_option_lists_the_valid_ones():
    result = _run("train.py", "model=resnet")
    assert result.returncode != 0
    assert "Could not find 'model/resnet'" in result.stderr and "tiny" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stream", _options("stream"))
def test_stream_group_ends_both_pipelines_also_after_an_experiment(compose, stream):
    from hydra.utils import instantiate

    from asgcn_lightning.data.transforms import Stream

    cfg = compose(["experiment=natops", f"stream={stream}"])
    assert cfg.dataset.stream == stream and cfg.dataset.name == "natops"
    datamodule = instantiate(cfg.dataset)  # the dataset option is the data module
    for pipeline in (datamodule.train_transform, datamodule.eval_transform):
        assert isinstance(pipeline.transforms[-1], Stream) and pipeline.transforms[-1].kind == stream
    assert not any(isinstance(t, Stream) for t in instantiate(compose([]).dataset).eval_transform.transforms)


@pytest.mark.parametrize(("override", "message"), [
    ("transfer.mode=bogus", "expected one of [feature_extraction, finetune, architecture_only]"),
    ("transfer.freez=[aim]", "Key 'freez' not in 'TransferConfig'"),
    ("model.aim.mode=bogus", "expected one of [frozen, finetune, separate]"),
    ("lr_scaling.rule=cube", "expected one of [none, linear, sqrt]"),
])
def test_typed_nodes_refuse_unknown_keys_and_choices_while_composing(compose, override, message):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as raised:
        compose(["transfer=finetune", override])
    assert message in str(raised.value.__cause__ or raised.value)


def test_typed_nodes_keep_plain_names_for_the_code_and_the_saved_config(compose):
    cfg = compose(["transfer=feature_extraction", "model=asgcn_tiny", "model.aim.mode=separate"])
    assert cfg.transfer.mode == "feature_extraction" and cfg.model.aim.mode == "separate"
    assert cfg.transfer.freeze == [] and cfg.lr_scaling.rule == "none"  # the schema's defaults fill the node
    saved = OmegaConf.create(OmegaConf.to_yaml(cfg))
    assert saved.model.aim.mode == "separate" and saved.lr_scaling.base_batch_size == cfg.dataset.batch_size
    assert compose(["model=stgcn"]).model.aim is None  # a model without an AIM drops the typed node
