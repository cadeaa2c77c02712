"""Start-up (asgcn_lightning.runtime): OpenMP threads that sleep while they wait, a quiet default run whose
progress reaches a log file, and ``verbose=true`` for the library chatter."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

from conftest import REPO_ROOT

from asgcn_lightning import runtime
from asgcn_lightning.progress import epoch_line

# what a default run printed before: nothing a user can act on
NOISE = ("anonymous setting", "`resume` will be ignored", "litlogger", "litmodels", "LeafSpec",
         "find_unused_parameters", "sync_dist=True", "TensorFlow Lite", "absl::InitializeLog")


def _python(code: str, **env: str) -> str:
    environ = {key: value for key, value in __import__("os").environ.items()
               if key not in runtime.WAIT_VARIABLES}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                          env={**environ, **env})
    return done.stdout.strip()


def test_the_package_chooses_a_short_spin_before_torch_loads_unless_the_user_chose():
    code = ("import os, asgcn_lightning, torch\n"
            "print(*(os.environ.get(name) for name in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')))")
    assert _python(code) == "None 10000 0"
    assert _python(code, OMP_WAIT_POLICY="PASSIVE") == "PASSIVE None None"
    assert _python(code, GOMP_SPINCOUNT="300000") == "None 300000 None"  # libgomp's own spinning default, kept
    environ = {"GOMP_SPINCOUNT": "10"}
    assert runtime.choose_wait_policy(environ) == {} and environ == {"GOMP_SPINCOUNT": "10"}


def test_verbose_brings_back_what_a_default_run_hides(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info
    from torch.utils._pytree import LeafSpec

    assert runtime.is_quiet()  # the package's import made it so
    runtime.quiet_library_chatter()  # in front of pytest's own warning filters, as at a command's start
    try:
        with warnings.catch_warnings(record=True) as caught:
            LeafSpec()  # what Lightning's pytree helper does on every batch
        with caplog.at_level(logging.INFO):
            rank_zero_info("💡 Tip: install something")
        assert not caught and "Tip" not in caplog.text
        runtime.show_library_chatter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            LeafSpec()
        with caplog.at_level(logging.INFO):
            rank_zero_info("💡 Tip: install something")
        assert any("LeafSpec" in str(w.message) for w in caught) and "Tip" in caplog.text
    finally:
        runtime.quiet_library_chatter()


def test_native_stderr_is_hidden_only_inside_the_block():
    code = ("import os; from asgcn_lightning.runtime import native_stderr_hidden\n"
            "with native_stderr_hidden(): os.write(2, b'hidden\\n')\n"
            "os.write(2, b'shown\\n')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stderr == "shown\n"


def test_epoch_line_shows_the_current_stage_only():
    metrics = {"train/aim_loss": 6.7e4, "val/aim_loss": 2.9e4, "train/loss": 1.657, "val/acc_top1": 0.5833,
               "val/loss": 1.042, "perf/train_samples_per_sec": 95.34}
    main = epoch_line(1, 9, "main", 60, metrics, seconds_left=125.4)
    assert main == ("epoch 1/9 (main), step 60: train/loss 1.657, val/acc_top1 0.5833, val/loss 1.042, "
                    "95.3 samples/s; ETA 2:05")
    assert epoch_line(0, 9, "aim", 30, metrics, 0).startswith("epoch 0/9 (aim), step 30: train/aim_loss 6.7e+04, "
                                                              "val/aim_loss 2.9e+04, 95.3 samples/s")


def test_a_default_run_logs_one_line_per_epoch_to_a_file_and_no_library_chatter(tmp_path: Path):
    """stdout and stderr are pipes here, as in a cluster job: no bar, epoch lines, nothing from the list above."""
    command = [sys.executable, "train.py", "model=asgcn_tiny", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
               "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "torch_threads=1",
               f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert [noise for noise in NOISE if noise in output] == []
    lines = done.stdout.splitlines()
    assert "samples: train 420, val 60, test 240; 1 process" in lines
    assert re.search(r"^Total FLOPs: [1-9][0-9.]* [KMG]", done.stdout, re.MULTILINE)  # counted on one sample, not 0
    aim = next(line for line in lines if line.startswith("epoch 0/1 (aim), step 3: train/aim_loss "))
    main = next(line for line in lines if line.startswith("epoch 1/1 (main), step 6: train/loss "))
    assert "val/aim_loss" in aim and "samples/s; ETA" in aim
    assert "aim_loss" not in main and "val/acc_top1" in main and main.endswith("; ETA 0:00")
