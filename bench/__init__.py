"""Benchmark suite (``make bench``, ``python -m bench`` from the repository root): training and inference
speed, memory, FLOPs, data loading, NTU parsing and the demo's frame rate, as JSON on standard output.

Not part of the installed package: it measures a source checkout, and its data parts read the
recorded fixtures given with ``--fixtures``.

* :mod:`bench.measure` — one model configuration: step times, peak memory, FLOPs (run in a fresh process);
* :mod:`bench.loading` — the training loader's samples/s and the NTU parse figures (:mod:`bench.ntu_parse`);
* :mod:`bench.demo` — ``demo.py``'s end-to-end frame rate per mode on a real video;
* :mod:`bench.report` — the targets and the table;
* :mod:`bench.__main__` — the command line.
"""

from pathlib import Path

import asgcn_lightning  # noqa: F401  # its start-up settings apply before torch loads, as in every entry point

REPO_ROOT = Path(__file__).resolve().parents[1]
