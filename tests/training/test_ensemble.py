"""Ensembles: the grid's [[ensembles]] tables, the choice on validation only, the candidates'
checks, and a committee of tiny real runs exported as one model with the single model's
signature (SavedModel + ONNX, parity, card, figure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import contract
from training import ensemble_selection as selection
from training import identity, records
from training.config import GridError, RunConfig, load_grid, parse_grid

TINY = """\
[defaults]
epochs = 1
train_limit = 1000

[[runs]]
name = "softmax"
group = "other"
model = "softmax"

[[runs]]
name = "member-{seed}"
group = "member"
product = { seed = [1, 2] }

[[runs]]
name = "member-bn"
group = "member"
model = "lenet5_bn"

[[runs]]
name = "member-untrained"
group = "member"
"""
ENSEMBLES = """
[[ensembles]]
name = "committee"
group = "member"
max_members = 3

[[ensembles]]
name = "pair"
runs = ["member-1", 2]
"""


def _grid(text: str):
    return parse_grid(textwrap.dedent(text), "my.toml", "my")


# --- The grid declaration --------------------------------------------------------------------------
def test_ensembles_are_declared_beside_the_runs_and_change_none_of_them():
    plain, declared = _grid(TINY), _grid(TINY + ENSEMBLES)
    assert declared.runs == plain.runs
    assert ([identity.digest(r.to_dict()) for r in declared.runs]
            == [identity.digest(r.to_dict()) for r in plain.runs])
    committee, pair = declared.ensembles
    assert (committee.name, committee.candidates, committee.limit) == ("committee", (1, 2, 3, 4), 3)
    assert (pair.candidates, pair.max_members, pair.limit) == ((1, 2), None, 2)
    assert declared.ensemble("pair") is pair and plain.ensembles == ()
    with pytest.raises(KeyError, match="declares no ensemble 'trio'.*committee, pair"):
        declared.ensemble("trio")


def test_the_shipped_ensemble_grid_is_ten_seeds_of_the_optimized_recipe():
    grid, lab = load_grid("ensemble"), load_grid("lab")
    assert [r.seed for r in grid.runs] == list(range(1, 11))
    recipe = {k: v for k, v in lab.run(22).to_dict().items() if k not in ("name", "group", "seed")}
    for run in grid.runs:
        assert run.group == "member"
        assert {k: v for k, v in run.to_dict().items() if k in recipe} == recipe, run.name
    (spec,) = grid.ensembles
    assert (spec.name, spec.candidates, spec.limit) == ("lenet5-ensemble", tuple(range(10)), 10)
    assert load_grid("quick").ensembles == ()  # make demo exports no ensemble


RUNS = '[[runs]]\nname = "a"\ngroup = "g"\n[[runs]]\nname = "s"\ngroup = "h"\nmodel = "softmax"\n'
WHERE = r"my.toml: \[\[ensembles\]\] #1 \('e'\): "


@pytest.mark.parametrize("table, message", [
    ('name = "e"\ngroup = "g"\nmembers = 3', WHERE + r"unknown key\(s\) \['members'\]"),
    ('name = "e"\ngroup = "nope"', WHERE + "group = 'nope': no run of this file"),
    ('name = "e"\nruns = ["a", "zzz"]', WHERE + "runs: 'zzz' names no run"),
    ('name = "e"\nruns = [7]', WHERE + "runs: 7 names no run"),
    ('name = "e"\nruns = ["a", 0]', WHERE + "runs: 0 is named twice"),
    ('name = "e"\nruns = []', WHERE + "'runs' must be a non-empty list"),
    ('name = "e"\ngroup = "g"\nruns = ["a"]', WHERE + "name its candidates with 'group' or with 'runs'"),
    ('name = "e"', WHERE + "name its candidates with 'group' or with 'runs'"),
    ('name = "e"\ngroup = "h"', WHERE + r"run 1 \('s'\) is a 'softmax' model; .*lenet5, lenet5_bn"),
    ('name = "e"\nruns = ["s"]', WHERE + r"run 1 \('s'\) is a 'softmax' model"),
    ('name = "e"\ngroup = "g"\nmax_members = 0', WHERE + "'max_members' must be a positive"),
    ('name = "e"\ngroup = "g"\nmax_members = true', WHERE + "'max_members' must be a positive"),
    ('name = "a b"\ngroup = "g"', r"my.toml: \[\[ensembles\]\] #1 \('a b'\): 'name' must be"),
    ('group = "g"', r"my.toml: \[\[ensembles\]\] #1 \('\?'\): 'name' must be"),
])
def test_a_bad_ensemble_table_is_an_error_naming_file_ensemble_and_key(table, message):
    with pytest.raises(GridError, match=message):
        _grid(RUNS + "[[ensembles]]\n" + table)


def test_other_ensemble_mistakes_and_the_wide_model_are_refused():
    wide = RUNS + '[[runs]]\nname = "w"\ngroup = "g"\nmodel = "lenet5_bn_wide"\n'
    with pytest.raises(GridError, match=WHERE + r"run 2 \('w'\) is a 'lenet5_bn_wide' model"):
        _grid(wide + '[[ensembles]]\nname = "e"\ngroup = "g"')
    twice = '[[ensembles]]\nname = "e"\ngroup = "g"\n'
    with pytest.raises(GridError, match=r"#2 \('e'\): duplicate ensemble name"):
        _grid(RUNS + twice + twice)
    with pytest.raises(GridError, match="'ensembles' must be an array of tables"):
        _grid("ensembles = 1\n" + RUNS)


# --- The choice, on validation only ----------------------------------------------------------------
def _two_classes(p0: list[list[float]]) -> np.ndarray:
    """Log-probabilities [candidates, images, 2] from each candidate's P(class 0) per image."""
    p = np.asarray(p0, np.float64)
    return np.log(np.stack([p, 1 - p], axis=-1))


def test_the_choice_reads_validation_where_test_prefers_another_committee():
    labels = np.zeros(4, np.int64)
    validation = _two_classes([[.9, .9, .9, .4], [.4, .4, .9, .9]])  # alone 3/4 and 2/4; together 4/4
    test = _two_classes([[.9, .9, .9, .9], [.05, .05, .05, .05]])  # alone 4/4 and 0/4; together 0/4
    choice = selection.choose(validation, labels, run_indexes=[0, 1])
    assert (choice.order, choice.accuracies) == ((0, 1), (0.75, 0.5))
    assert (choice.k, choice.rule, choice.validation_accuracy) == (2, "mean_probabilities", 1.0)
    curve = selection.with_test_accuracy(choice, test, labels)
    assert [(p["k"], p["validation_accuracy"], p["test_accuracy"]) for p in curve] == [
        (1, .75, 1.0), (1, .75, 1.0), (2, 1.0, 0.0), (2, 1.0, 0.0)]
    assert selection.choose(test, labels, run_indexes=[0, 1]).k == 1  # what test would choose


def test_the_rule_is_chosen_by_validation_and_ties_go_to_fewer_members():
    # Each candidate right on one image of three (P(0) 0.01, label 1). All three: the mean of
    # P(0) is 0.603 (all wrong), the renormalised geometric mean 0.48 (all right).
    votes = _two_classes([[.9, .9, .01], [.9, .01, .9], [.01, .9, .9]])
    choice = selection.choose(votes, np.ones(3, np.int64), run_indexes=[0, 1, 2])
    assert [p["validation_accuracy"] for p in choice.curve] == pytest.approx(
        [1 / 3, 1 / 3, 2 / 3, 2 / 3, 0, 1])
    assert (choice.k, choice.rule, choice.validation_accuracy) == (3, "mean_logits", 1.0)
    # Equal candidates: every committee ties, so one member, ranked by run index.
    same = _two_classes([[.9, .2], [.9, .2], [.9, .2]])
    choice = selection.choose(same, np.zeros(2, np.int64), run_indexes=[5, 2, 9])
    assert (choice.order, choice.k, choice.rule) == ((1, 0, 2), 1, "mean_probabilities")
    assert selection.choose(same, np.zeros(2, np.int64), [5, 2, 9], max_members=2).curve[-1]["k"] == 2


def test_the_rules_combine_as_documented():
    rng = np.random.default_rng(0)
    log_p = selection.log_softmax(rng.normal(size=(3, 5, 10)) * 3)
    p = np.exp(log_p)
    np.testing.assert_allclose(np.exp(selection.combine(log_p, "mean_probabilities")),
                               p.mean(axis=0), rtol=1e-12)
    geometric = np.exp(log_p.mean(axis=0))
    np.testing.assert_allclose(np.exp(selection.combine(log_p, "mean_logits")),
                               geometric / geometric.sum(axis=1, keepdims=True), rtol=1e-12)
    with pytest.raises(ValueError, match="unknown rule 'vote'"):
        selection.combine(log_p, "vote")


@pytest.mark.parametrize("rule", selection.RULES)
def test_the_exported_graph_combines_as_the_choice_does(rule):
    from training import models

    rng = np.random.default_rng(1)
    logits = [rng.normal(size=(5, 10)).astype(np.float32) * 3 for _ in range(3)]
    combined = np.asarray(models.Combine(rule)(logits))
    np.testing.assert_allclose(selection.log_softmax(combined),
                               selection.combine(selection.log_softmax(np.stack(logits)), rule),
                               atol=1e-5)


# --- The candidates ------------------------------------------------------------------------------
def _record(grid_dir: Path, index: int, config: RunConfig, *, status: str = "completed",
            model_file: bool = True) -> None:
    run_dir = grid_dir / config.name
    identity.claim(run_dir, config)
    if model_file:
        (run_dir / records.MODEL_FILE).write_bytes(b"placeholder: the candidates are not loaded")
    records.write_json_atomic(run_dir / records.RESULT_FILE, {
        "name": config.name, "index": index, "status": status, "validation_accuracy": 0.9,
        "config": config.to_dict(), "config_digest": identity.digest(config.to_dict())})


def test_missing_candidates_are_refused_by_name_unless_partial(tmp_path):
    grid = _grid(TINY + ENSEMBLES)
    spec = grid.ensemble("committee")
    _record(tmp_path, 1, grid.runs[1])
    _record(tmp_path, 2, grid.runs[2], status="diverged")
    _record(tmp_path, 3, grid.runs[3], model_file=False)
    with pytest.raises(selection.EnsembleError, match=(
            r"3 of its 4 candidates cannot be used: run 2 member-2 \(status 'diverged'\), run 3 "
            r"member-bn \(no model.keras\), run 4 member-untrained \(not finished: no result.json\);"
            r" train them, or export the others with --partial")):
        selection.candidates(grid, spec, tmp_path)
    found, missing = selection.candidates(grid, spec, tmp_path, partial=True)
    assert [c.name for c in found] == ["member-1"] and found[0].result["index"] == 1
    assert [(m.index, m.name) for m in missing] == [(2, "member-2"), (3, "member-bn"),
                                                    (4, "member-untrained")]
    with pytest.raises(selection.EnsembleError, match="none of its candidates"):
        selection.candidates(grid, grid.ensemble("committee"), tmp_path / "empty", partial=True)


def test_legacy_and_non_lenet_members_are_refused(tmp_path):
    grid = _grid(TINY + ENSEMBLES)
    spec = grid.ensemble("pair")
    _record(tmp_path, 1, grid.runs[1])
    _record(tmp_path, 2, grid.runs[2].with_overrides(model="softmax"))  # trained --set model=...
    with pytest.raises(selection.EnsembleError, match="member-2: trained as a 'softmax' model"):
        selection.candidates(grid, spec, tmp_path)
    _record(tmp_path / "legacy", 1, grid.runs[1])
    _record(tmp_path / "legacy", 2, grid.runs[2])
    run_dir = tmp_path / "legacy" / "member-2"
    (run_dir / records.DIGEST_FILE).unlink()
    result = json.loads((run_dir / records.RESULT_FILE).read_text())
    del result["config_digest"]
    records.write_json_atomic(run_dir / records.RESULT_FILE, result)
    with pytest.raises(identity.IdentityError, match="member-2 recorded before runs carried"):
        selection.candidates(grid, spec, tmp_path / "legacy")
    found, _ = selection.candidates(grid, spec, tmp_path / "legacy", allow_legacy=True)
    assert len(found) == 2


# --- A committee of tiny real runs, exported ---------------------------------------------------------
@pytest.fixture(scope="module")
def exported(mnist, tmp_path_factory):
    """Runs 1-3 of the tiny grid trained for real (1,000 images, one epoch), run 4 never, and
    the committee exported with --partial; the choice's labels are recorded."""
    from training import ensemble_export, train

    root = tmp_path_factory.mktemp("ensemble")
    (root / "tiny.toml").write_text(TINY + ENSEMBLES)
    grid = load_grid(str(root / "tiny.toml"))
    runs_dir = root / "runs"
    for index in (1, 2, 3):
        config = grid.run(index)
        train.run(config, mnist, runs_dir / grid.name / config.name, index=index, grid=grid.name)
    spec = grid.ensemble("committee")
    found, missing = selection.candidates(grid, spec, runs_dir / grid.name, partial=True)
    chosen_on = []

    def spy(validation, labels, *args):
        chosen_on.append(labels)
        return selection.choose(validation, labels, *args)

    original, ensemble_export.choose = ensemble_export.choose, spy
    try:
        base = root / "models" / "committee"
        version = ensemble_export.export_ensemble(grid, spec, runs_dir, base, mnist, found,
                                                  missing)
    finally:
        ensemble_export.choose = original
    return {"root": root, "grid_dir": runs_dir / grid.name, "version_dir": base / str(version),
            "chosen_on": chosen_on, "version": version}


def _card(exported) -> dict:
    return json.loads((exported["version_dir"] / contract.MODEL_CARD_FILENAME).read_text())


def test_the_committee_is_one_model_with_the_single_models_signature(exported, mnist):
    import onnxruntime as ort
    import tensorflow as tf

    assert exported["version"] == 1
    version_dir = exported["version_dir"]
    signature = tf.saved_model.load(str(version_dir)).signatures[contract.SIGNATURE_NAME]
    (name, spec), = signature.structured_input_signature[1].items()
    assert (name, spec.dtype, spec.shape.as_list()) == (contract.INPUT_NAME, tf.float32,
                                                        [None, *contract.INPUT_SHAPE])
    assert set(signature.structured_outputs) == set(contract.OUTPUT_NAMES)
    session = ort.InferenceSession(str(version_dir / contract.ONNX_FILENAME),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [contract.INPUT_NAME]
    assert {o.name: o.type for o in session.get_outputs()} == {
        contract.OUTPUT_PROBABILITIES: "tensor(float)", contract.OUTPUT_DIGIT: "tensor(int64)"}
    probabilities, digits = session.run(list(contract.OUTPUT_NAMES),
                                        {contract.INPUT_NAME: mnist.test_images})
    out = signature(image=tf.constant(mnist.test_images[:500]))
    np.testing.assert_array_equal(out[contract.OUTPUT_DIGIT].numpy(), digits[:500])
    # The graph computes the committee the card describes, members and rule:
    card = _card(exported)
    members = [_member_log_probabilities(exported["grid_dir"] / m["run"], mnist.test_images)
               for m in card["members"]]
    expected = np.exp(selection.combine(np.stack(members), card["rule"]))
    assert np.abs(probabilities - expected).max() <= 1e-5
    test_accuracy = np.mean(digits == mnist.test_labels)
    assert abs(test_accuracy - card["metrics"]["test_accuracy"]) <= 1 / len(digits)


def _member_log_probabilities(run_dir: Path, images: np.ndarray) -> np.ndarray:
    import keras

    model = keras.models.load_model(run_dir / records.MODEL_FILE)
    return selection.log_softmax(model.predict(images, batch_size=1000, verbose=0))


def test_the_card_lists_members_choice_curve_and_what_was_missing(exported, mnist):
    card, version_dir = _card(exported), exported["version_dir"]
    (labels,) = exported["chosen_on"]
    assert labels is mnist.validation_labels  # chosen on the validation split
    assert card["parity"]["passed"] and card["parity"]["images"] == len(mnist.test_images)
    assert card["baseline"] and card["model_name"] == contract.MODEL_NAME
    assert (card["ensemble"], card["max_members"]) == ("committee", 3)
    assert card["missing"] == [{"run": "member-untrained", "index": 4,
                                "reason": "not finished: no result.json"}]
    ranked = card["members"] + card["not_chosen"]
    assert sorted(m["index"] for m in ranked) == [1, 2, 3]
    assert [m["rank"] for m in ranked] == [1, 2, 3] and len(card["members"]) == card["k"]
    assert [m["metrics"]["validation_accuracy"] for m in ranked] == sorted(
        (m["metrics"]["validation_accuracy"] for m in ranked), reverse=True)
    for member in card["members"]:
        result = records.read_result(exported["grid_dir"] / member["run"])
        assert member["config"] == result["config"] and member["config_verified"]
        assert member["config_digest"] == identity.digest(result["config"])
        assert member["metrics"]["validation_accuracy"] == pytest.approx(
            result["validation_accuracy"], abs=2e-4)
    best = max(card["curve"], key=lambda p: (p["validation_accuracy"], -p["k"],
                                             -selection.RULES.index(p["rule"])))
    assert (best["k"], best["rule"]) == (card["k"], card["rule"])
    assert card["metrics"] == {k: best[k] for k in ("validation_accuracy", "test_accuracy")}
    assert card["parameter_count"] == sum(m["parameter_count"] for m in card["members"])
    assert card["reproduce"][-1] == f"python -m training export --grid {exported['root']}/tiny.toml" \
                                    " --ensemble committee --partial"
    assert card["figure"] == "members.png" and "members.png" in card["files"]
    assert (version_dir / "members.png").read_bytes()[:4] == b"\x89PNG"
    figures = exported["grid_dir"] / "figures"
    assert (figures / "committee-members.png").is_file()
    assert json.loads((figures / "committee-members.json").read_text())["curve"] == card["curve"]


def _cli(*args: str, cwd: Path, mnist_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MNIST_DIR": str(mnist_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_command_refuses_an_incomplete_or_unknown_committee(exported, mnist_dir):
    root = exported["root"]
    refused = _cli("export", "--grid", "tiny.toml", "--ensemble", "committee", cwd=root,
                   mnist_dir=mnist_dir)
    assert refused.returncode == 2, refused.stderr
    assert "run 4 member-untrained (not finished: no result.json)" in refused.stderr
    assert "--partial" in refused.stderr and "Traceback" not in refused.stderr
    unknown = _cli("export", "--grid", "tiny.toml", "--ensemble", "trio", cwd=root,
                   mnist_dir=mnist_dir)
    assert unknown.returncode == 2 and "declares no ensemble 'trio'" in unknown.stderr
    stray = _cli("export", "--grid", "tiny.toml", "--partial", cwd=root, mnist_dir=mnist_dir)
    assert stray.returncode == 2 and "--partial goes with --ensemble" in stray.stderr
    assert not (root / "models" / "trio").exists()
    (root / "soft.toml").write_text(RUNS + '[[ensembles]]\nname = "e"\nruns = ["a", "s"]\n')
    softmax = _cli("list", "--grid", "soft.toml", cwd=root, mnist_dir=mnist_dir)
    assert softmax.returncode == 2
    assert "soft.toml: [[ensembles]] #1 ('e'): run 1 ('s') is a 'softmax' model" in softmax.stderr
