"""The README's commands, and what a user sees for bad input on the command line."""

import re
import subprocess
import sys

from conftest import REPO_ROOT


def _run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def test_readme_commands_are_the_makefile_targets():
    readme = (REPO_ROOT / "README.md").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert blocks[0].strip() == "make setup && make train"
    assert blocks[1].strip() == "make test"
    targets = set(re.findall(r"^([a-z]+):", makefile, flags=re.M))
    assert {"setup", "train", "test"} <= targets
    assert "train.py" in makefile.split("\ntrain:")[1].split("\n\n")[0]
    assert "pytest" in makefile.split("\ntest:")[1].split("\n\n")[0]
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_missing_data_is_one_clear_line_naming_the_prepare_command(tmp_path):
    result = _run("train.py", "dataset=ntu60", f"paths.data_dir={tmp_path}", "logger=csv",
                  f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"no prepared ntu60 data at {tmp_path}/ntu60" in result.stderr
    assert "python -m asgcn_lightning.prepare dataset=ntu60" in result.stderr


def test_split_without_values_is_a_clear_error(tmp_path):
    result = _run("train.py", "dataset=natops", "split=xview", f"paths.data_dir={tmp_path}", "logger=csv",
                  f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "defines no xview training values" in result.stderr


def test_eval_of_a_checkpoint_without_a_model_card_is_one_clear_line(tmp_path):
    """Weights alone do not say how to use them (layout, classes, transforms): refused in one line."""
    import torch

    torch.save({"state_dict": {"network.head.fc.weight": torch.zeros(3, 3)}}, tmp_path / "foreign.ckpt")
    result = _run("eval.py", f"ckpt_path={tmp_path}/foreign.ckpt", f"paths.log_dir={tmp_path}/logs")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path}/foreign.ckpt: this checkpoint carries no model card" in result.stderr
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(b"PK\x03\x04 not a checkpoint")
    result = _run("predict.py", f"ckpt_path={torn}", "input=store:0", f"paths.log_dir={tmp_path}/logs")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"checkpoint {torn}: not a readable checkpoint" in result.stderr


def test_prepared_ntu_trains_with_the_readme_command_that_does_not_repeat_the_source(tmp_path, fixtures_dir):
    """prepare names the raw folder; train.py names only the data set (the store's provenance must allow it)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for skeleton in sorted((fixtures_dir / "ntu" / "skeletons").glob("*.skeleton"))[:6]:
        (raw / skeleton.name).write_bytes(skeleton.read_bytes())  # performer 1: a training subject of xsub
        (raw / skeleton.name.replace("P001", "P003")).write_bytes(skeleton.read_bytes())  # 3: a test subject
    prepared = _run("-m", "asgcn_lightning.prepare", "dataset=ntu60", f"dataset.raw_dir={raw}",
                    f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={tmp_path}/prepare")
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    common = ["dataset=ntu60", "model=tiny", f"paths.data_dir={tmp_path}/data", "logger=csv", "trainer.max_epochs=1",
              "dataset.num_workers=0", "test_after_fit=false", "torch_threads=1"]
    trained = _run("train.py", *common, "split=xsub", f"hydra.run.dir={tmp_path}/run")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    # another source folder than the store was prepared from is still refused
    other = _run("train.py", *common, "split=xsub", f"dataset.raw_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r2")
    assert other.returncode == 2 and "prepared with other settings (raw_dir " in other.stderr
    assert f"dataset.prepare.raw_dir={tmp_path}" in other.stderr  # the override that prepares it again
