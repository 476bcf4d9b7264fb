"""Run identity through the CLI: a run directory belongs to the config that trained it.

The user's report: a finished run, rerun with another ``--set``, said "completed" in seconds and
rewrote its config and record over the old weights; a grid skipped runs whose grid file had
changed; export would have published the old weights under the new settings. A tiny one-run grid
file (softmax, one epoch of 500 images) is trained once for the module; each test works on its
own copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import contract
from training import records

TINY_GRID = """\
[defaults]
epochs = 1
train_limit = 500

[[runs]]
name = "softmax"
group = "softmax"
model = "softmax"
optimizer = "sgd"
learning_rate = 0.1
"""
RUN = ("run", "--grid", "tiny.toml", "--index", "0", "--threads", "1")
GRID = ("grid", "--grid", "tiny.toml", "--jobs", "1", "--no-report")
EXPORT = ("export", "--grid", "tiny.toml", "--model-base-path", "models/lenet5")
RUN_FILES = (records.CONFIG_FILE, records.DIGEST_FILE, records.RESULT_FILE, records.MODEL_FILE)


def _cli(*args: str, cwd: Path, mnist_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MNIST_DIR": str(mnist_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in RUN_FILES
            if (run_dir / name).exists()}


@pytest.fixture(scope="module")
def trained(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with tiny.toml and its run 0 trained (runs/tiny/softmax)."""
    work = tmp_path_factory.mktemp("identity")
    (work / "tiny.toml").write_text(TINY_GRID)
    ran = _cli(*RUN, cwd=work, mnist_dir=mnist_dir)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return work


@pytest.fixture
def work(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(trained, copy, symlinks=True)
    return copy


@pytest.mark.slow
def test_a_run_rerun_with_other_settings_is_refused_and_restart_trains_it_afresh(work, mnist_dir):
    run_dir = work / "runs" / "tiny" / "softmax"
    before = _files(run_dir)

    # The reported scenario: same run, another learning rate (and epochs), on a finished run.
    changed = _cli(*RUN, "--set", "learning_rate=0.5", "--set", "epochs=2", cwd=work,
                   mnist_dir=mnist_dir)
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "trained under another config" in changed.stderr
    assert "learning_rate: 0.1 -> 0.5" in changed.stderr and "epochs: 1 -> 2" in changed.stderr
    assert "--restart" in changed.stderr and "Traceback" not in changed.stderr
    assert _files(run_dir) == before and set(before) == set(RUN_FILES)  # nothing rewritten

    restarted = _cli(*RUN, "--set", "learning_rate=0.5", "--restart", cwd=work,
                     mnist_dir=mnist_dir)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    (old,) = run_dir.parent.glob(f"softmax{records.SUPERSEDED}*")
    assert _files(old) == before  # moved aside whole, never deleted
    assert "softmax epoch 1/1" in restarted.stderr  # trained afresh, not resumed
    result = records.read_result(run_dir)
    assert result["learning_rate"] == 0.5 and result["config"]["learning_rate"] == 0.5
    assert [h["epoch"] for h in records.read_history(run_dir)] == [0]
    from training import identity

    written = json.loads((run_dir / records.CONFIG_FILE).read_text())
    assert result["config"] == written
    assert result["config_digest"] == identity.digest(written) == \
        (run_dir / records.DIGEST_FILE).read_text().strip()
    # The superseded directory is no run of the grid: a grid-wide read sees one record.
    assert [r["name"] for r in records.read_results(run_dir.parent)] == ["softmax"]

    # The same command again: completes as before (re-evaluated, nothing trained, nothing moved).
    again = _cli(*RUN, "--set", "learning_rate=0.5", cwd=work, mnist_dir=mnist_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "epoch 1/1" not in again.stderr
    assert len(list(run_dir.parent.glob(f"softmax{records.SUPERSEDED}*"))) == 1
    assert records.read_result(run_dir)["config_digest"] == result["config_digest"]

    # The model card describes the weights: their config, and a command that retrains them.
    exported = _cli(*EXPORT, cwd=work, mnist_dir=mnist_dir)
    assert exported.returncode == 0, exported.stderr[-3000:]
    card = json.loads((work / "models/lenet5/1" / contract.MODEL_CARD_FILENAME).read_text())
    assert card["config"] == written and card["config_digest"] == result["config_digest"]
    assert card["config_verified"] is True
    assert card["reproduce"] == [
        "python -m training run --grid tiny.toml --index 0 --set learning_rate=0.5",
        "python -m training export --grid tiny.toml --run softmax",
    ]


@pytest.mark.slow
def test_an_edited_grid_file_is_refused_naming_the_key_until_restart(work, mnist_dir):
    run_dir = work / "runs" / "tiny" / "softmax"
    unchanged = _cli(*GRID, cwd=work, mnist_dir=mnist_dir)
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert "1 already done, 0 to run" in unchanged.stderr  # skipped, as before

    before = _files(run_dir)
    (work / "tiny.toml").write_text(TINY_GRID.replace("learning_rate = 0.1",
                                                      "learning_rate = 0.05"))
    edited = _cli(*GRID, cwd=work, mnist_dir=mnist_dir)
    assert edited.returncode == 2, edited.stderr[-3000:]
    assert "run 0 softmax" in edited.stderr and "learning_rate: 0.1 -> 0.05" in edited.stderr
    assert "nothing was started" in edited.stderr and "--restart" in edited.stderr
    assert "Traceback" not in edited.stderr
    assert _files(run_dir) == before

    restarted = _cli(*GRID, "--restart", cwd=work, mnist_dir=mnist_dir)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    (old,) = run_dir.parent.glob(f"softmax{records.SUPERSEDED}*")
    assert _files(old) == before
    result = records.read_result(run_dir)
    assert result["status"] == records.COMPLETED and result["learning_rate"] == 0.05

    again = _cli(*GRID, "--restart", cwd=work, mnist_dir=mnist_dir)  # the same command: resumes
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 already done, 0 to run" in again.stderr
    assert len(list(run_dir.parent.glob(f"softmax{records.SUPERSEDED}*"))) == 1


def _edit_record(run_dir: Path) -> None:
    """result.json rewritten as if another learning rate had trained the weights beside it."""
    result = records.read_result(run_dir)
    result["learning_rate"] = result["config"]["learning_rate"] = 0.5
    records.write_json_atomic(run_dir / records.RESULT_FILE, result)


def _edit_config(run_dir: Path) -> None:
    """config.json edited after training."""
    config = json.loads((run_dir / records.CONFIG_FILE).read_text())
    records.write_json_atomic(run_dir / records.CONFIG_FILE, {**config, "learning_rate": 0.5})


@pytest.mark.parametrize("tamper", [_edit_record, _edit_config], ids=["record", "config"])
def test_report_and_export_refuse_a_record_that_contradicts_its_config(work, mnist_dir, tamper):
    run_dir = work / "runs" / "tiny" / "softmax"
    reported = _cli("report", "--grid", "tiny.toml", cwd=work, mnist_dir=mnist_dir)
    assert reported.returncode == 0, reported.stderr[-3000:]

    tamper(run_dir)
    for command in (("report", "--grid", "tiny.toml"), EXPORT):
        refused = _cli(*command, cwd=work, mnist_dir=mnist_dir)
        assert refused.returncode == 2, (command, refused.stderr[-3000:])
        assert f"{Path('runs/tiny/softmax')}: its record does not describe the config that " \
               "trained it" in refused.stderr, refused.stderr[-3000:]
        assert "Traceback" not in refused.stderr
    assert not (work / "models").exists()


def _make_legacy(run_dir: Path) -> None:
    """The run as a version before run identity left it: no digest anywhere."""
    (run_dir / records.DIGEST_FILE).unlink(missing_ok=True)
    result = records.read_result(run_dir)
    result.pop("config_digest", None)
    records.write_json_atomic(run_dir / records.RESULT_FILE, result)


def test_a_legacy_run_is_reported_and_skipped_but_not_exported_or_resumed(work, mnist_dir):
    run_dir = work / "runs" / "tiny" / "softmax"
    _make_legacy(run_dir)
    reported = _cli("report", "--grid", "tiny.toml", cwd=work, mnist_dir=mnist_dir)
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert "not verified: softmax" in reported.stderr
    assert "(their configs not verified): softmax" in \
        (work / "runs/tiny/results.md").read_text()

    exported = _cli(*EXPORT, cwd=work, mnist_dir=mnist_dir)
    assert exported.returncode == 2, exported.stderr[-3000:]
    assert "recorded before runs carried a config digest" in exported.stderr
    assert "--allow-legacy" in exported.stderr and not (work / "models").exists()

    skipped = _cli(*GRID, cwd=work, mnist_dir=mnist_dir)  # same config: left alone, warned
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "1 already done, 0 to run" in skipped.stderr and "legacy" in skipped.stderr

    resumed = _cli(*RUN, cwd=work, mnist_dir=mnist_dir)  # nothing writes a digest for it
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "trained before runs recorded their config digest" in resumed.stderr
    assert "--restart" in resumed.stderr and not (run_dir / records.DIGEST_FILE).exists()

    (work / "tiny.toml").write_text(TINY_GRID.replace("learning_rate = 0.1",
                                                      "learning_rate = 0.05"))
    edited = _cli(*GRID, cwd=work, mnist_dir=mnist_dir)
    assert edited.returncode == 2, edited.stderr[-3000:]
    assert "learning_rate: 0.1 -> 0.05" in edited.stderr


def test_selection_refuses_a_legacy_choice_unless_allowed(tmp_path):
    from training import identity, selection
    from training.config import RunConfig

    def fake_run(name: str, validation: float, legacy: bool) -> None:
        config = RunConfig(name=name, group="grid")
        run_dir = tmp_path / name
        identity.claim(run_dir, config)
        (run_dir / records.MODEL_FILE).write_bytes(b"placeholder for selection only")
        result = {"name": name, "status": records.COMPLETED, "validation_accuracy": validation,
                  "config": config.to_dict(), "config_digest": identity.digest(config.to_dict())}
        if legacy:
            (run_dir / records.DIGEST_FILE).unlink()
            del result["config_digest"]
        records.write_json_atomic(run_dir / records.RESULT_FILE, result)

    fake_run("a", 0.99, legacy=False)
    fake_run("b", 0.98, legacy=True)  # not chosen: it does not stop the export
    assert selection.select_run(tmp_path, runs=["a", "b"])["name"] == "a"
    with pytest.raises(identity.IdentityError, match="before runs carried a config digest"):
        selection.select_run(tmp_path, run="b", runs=["a", "b"])
    assert selection.select_run(tmp_path, run="b", runs=["a", "b"],
                                allow_legacy=True)["name"] == "b"
