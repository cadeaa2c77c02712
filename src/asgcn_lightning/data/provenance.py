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


def preparation_differences(store_dir: Path, prepare: Callable[..., Any]) -> dict[str, str]:
    """How the recorded preparation of ``store_dir`` differs from ``prepare`` (empty: same, or unknown),
    as ``{argument: "argument=<recorded> (now <wanted>)"}``; the preparer itself is the argument ``""``.

    An argument that is ``None`` in ``prepare`` is not compared: training commands name the data set,
    not its source (``python train.py dataset=ntu60`` after preparing with ``dataset.raw_dir=...``).
    """
    path = store_dir / PREPARED_WITH_FILE
    if not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text())
        recorded_preparer, recorded_arguments = recorded["preparer"], dict(recorded["arguments"])
    except (ValueError, KeyError, TypeError):
        return {"": f"{path} is unreadable"}
    wanted = preparation_of(prepare)
    # the function, not its module: a preparer that moved to another module makes the same store
    if recorded_preparer.rsplit(".", 1)[-1] != wanted["preparer"].rsplit(".", 1)[-1]:
        return {"": f"preparer {recorded_preparer} (now {wanted['preparer']})"}
    keys = sorted(key for key in set(recorded_arguments) | set(wanted["arguments"])
                  if wanted["arguments"].get(key, "absent") is not None)
    return {key: f"{key}={recorded_arguments.get(key)!r} (now {wanted['arguments'].get(key)!r})" for key in keys
            if recorded_arguments.get(key) != wanted["arguments"].get(key)}
