"""What a prepared store was made from, so a store prepared with other settings is never used silently.

A store folder is named by the data set (``data/pyskl``), not by its settings: preparing the xsub split
of a pickle and then training with ``dataset.split_train=xview_train`` would otherwise train on the
wrong samples. After a preparation the preparer and its arguments are written next to the store
(``prepared_with.json``); before a store is used they are compared with the config's. A store
without the file (made by hand, or by an older version) is used as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from asgcn_lightning.atomic import write_atomically

PREPARED_WITH_FILE = "prepared_with.json"
# arguments that change how fast a store is made, not what it holds
_NOT_CONTENT = frozenset({"num_workers"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return str(value)  # paths, and anything else that only has a text form


def preparation_of(prepare: Callable[..., Any]) -> dict[str, Any]:
    """The preparer (a function or a ``functools.partial`` of one) and its arguments, as JSON values."""
    function = getattr(prepare, "func", prepare)
    arguments = {key: value for key, value in getattr(prepare, "keywords", {}).items() if key not in _NOT_CONTENT}
    record = {"preparer": f"{function.__module__}.{function.__qualname__}", "arguments": arguments}
    return json.loads(json.dumps(record, default=_jsonable))


def prepare_store(prepare: Callable[..., Any], store_dir: Path) -> None:
    """Run the preparer into ``store_dir``, then record what it was run with (atomically)."""
    prepare(store_dir=store_dir)
    write_atomically(store_dir / PREPARED_WITH_FILE, json.dumps(preparation_of(prepare), indent=1) + "\n")


def differing_arguments(store_dir: Path, prepare: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """``{argument: (recorded, now)}`` where the recorded preparation of ``store_dir`` differs from ``prepare``.

    Empty when they agree or nothing is recorded. An argument that is ``None`` in ``prepare`` is not
    compared: training commands name the data set, not its source (``python train.py dataset=ntu60``
    after preparing with ``dataset.raw_dir=...``). A store made by another preparer, or whose record
    is unreadable, differs under the key ``preparer``.
    """
    path = store_dir / PREPARED_WITH_FILE
    if not path.is_file():
        return {}
    wanted = preparation_of(prepare)
    try:
        recorded = json.loads(path.read_text())
        recorded_preparer, recorded_arguments = recorded["preparer"], dict(recorded["arguments"])
    except (ValueError, KeyError, TypeError):
        return {"preparer": (f"{path} (unreadable)", wanted["preparer"])}
    # the function, not its module: a preparer that moved to another module makes the same store
    if recorded_preparer.rsplit(".", 1)[-1] != wanted["preparer"].rsplit(".", 1)[-1]:
        return {"preparer": (recorded_preparer, wanted["preparer"])}
    keys = sorted(key for key in set(recorded_arguments) | set(wanted["arguments"])
                  if wanted["arguments"].get(key, "absent") is not None)
    return {key: (recorded_arguments.get(key), wanted["arguments"].get(key)) for key in keys
            if recorded_arguments.get(key) != wanted["arguments"].get(key)}


def preparation_differences(store_dir: Path, prepare: Callable[..., Any]) -> list[str]:
    """:func:`differing_arguments` as ``key=recorded (now value)`` lines (empty: same, or unknown)."""
    return [f"{key}={recorded!r} (now {now!r})" for key, (recorded, now) in
            differing_arguments(store_dir, prepare).items()]


def override_value(value: Any) -> str:
    """``value`` as Hydra's command line reads it back (``null``, ``[340,256]``, ``'a b'``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    text = str(value)
    if isinstance(value, str) and (not text or any(char in text for char in " ,=:[]{}()'\"\\$")):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def stale_store_message(store_dir: Path, prepare: Callable[..., Any], prepare_command: str,
                        config_key: str = "dataset.prepare",
                        differences: dict[str, tuple[Any, Any]] | None = None) -> str | None:
    """The one-line error for a store prepared with other settings, naming the overrides that reuse it as it
    is and those that prepare it again; None when the store is as ``prepare`` would make it.

    ``differences`` (default: all of :func:`differing_arguments`) limits the message to those settings.
    """
    differences = differing_arguments(store_dir, prepare) if differences is None else differences
    if not differences:
        return None
    if "preparer" in differences:
        recorded, now = differences["preparer"]
        return (f"{store_dir} was made by {recorded}, not {now}: prepare it with `{prepare_command}`, or set "
                "dataset.store_dir to another folder")
    changed = "; ".join(f"{key} {override_value(recorded)} there, {override_value(now)} now"
                        for key, (recorded, now) in differences.items())
    reuse = " ".join(f"{config_key}.{key}={override_value(recorded)}" for key, (recorded, _now) in differences.items())
    again = " ".join(f"{config_key}.{key}={override_value(now)}" for key, (_recorded, now) in differences.items())
    return (f"{store_dir} was prepared with other settings ({changed}): add `{reuse}` to use it as it is, or "
            f"prepare it again with `{prepare_command} {again}` (or set dataset.store_dir to another folder)")
