"""Grids are data: the file machinery (expansion, like, defaults, validation, indices) and the
contents of the shipped product grid."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from training import config
from training import grid as grid_runner
from training.config import GridError, RunConfig, load_grid, parse_grid


def _grid(text: str) -> config.Grid:
    return parse_grid(textwrap.dedent(text), "my.toml", "my")


# --- the machinery -----------------------------------------------------------------------------
def test_product_expands_in_order_last_key_fastest_with_formatted_names():
    grid = _grid("""
        [[runs]]
        name = "base"
        group = "g"

        [[runs]]
        name = "lenet5-{optimizer}-{learning_rate}-b{batch_size}"
        group = "grid"
        product = { optimizer = ["sgd", "adam"], learning_rate = [0.001, 0.0001], batch_size = [50, 128] }
        """)
    assert len(grid) == 9
    expected = list(itertools.product(("sgd", "adam"), (0.001, 0.0001), (50, 128)))
    assert [(r.optimizer, r.learning_rate, r.batch_size) for r in grid.runs[1:]] == expected
    assert grid.runs[1].name == "lenet5-sgd-0.001-b50"
    assert grid.runs[8].name == "lenet5-adam-0.0001-b128"
    assert grid.run(0).name == "base"
    with pytest.raises(IndexError, match="runs 0..8, not 9"):
        grid.run(9)


def test_defaults_then_like_then_own_keys():
    grid = _grid("""
        description = "two runs"
        [defaults]
        epochs = 3
        train_limit = 100

        [[runs]]
        name = "a"
        group = "g"
        learning_rate = 1          # an int where a float goes

        [[runs]]
        name = "b"
        like = "a"
        dropout = 0.25
        """)
    a, b = grid.runs
    assert (a.epochs, a.train_limit, a.learning_rate) == (3, 100, 1.0)
    assert isinstance(a.learning_rate, float)
    assert b == RunConfig("b", "g", learning_rate=1.0, epochs=3, train_limit=100, dropout=0.25)
    assert grid.description == "two runs" and grid.name == "my" and grid.spec == "my.toml"


@pytest.mark.parametrize("text, message", [
    ('[[runs]]\nname = "a"\ngroup = "g"\nlearning_rat = 0.1',
     r"my.toml: \[\[runs\]\] #1 \('a'\): unknown key\(s\) \['learning_rat'\]"),
    ('[[runs]]\nname = "a"\ngroup = "g"\nepochs = "5"', r"my.toml: run 0 \('a'\): epochs must be int"),
    ('[[runs]]\nname = "a"\ngroup = "g"\naugment = 1', r"run 0 \('a'\): augment must be bool"),
    ('[[runs]]\nname = "a"\ngroup = "g"\nepochs = 2.5', r"run 0 \('a'\): epochs must be int"),
    ('[[runs]]\nname = "a"\ngroup = "g"\noptimizer = "rmsprop"',
     r"run 0 \('a'\): run 'a': invalid optimizer='rmsprop'"),
    ('[[runs]]\nname = "a"\ngroup = "g"\n[[runs]]\nname = "a"\ngroup = "g"',
     r"run 1 \('a'\): duplicate run name \(run 0 has it\)"),
    ('[[runs]]\nname = "a"\ngroup = "g"\nproduct = { seed = [1, 2] }', "placeholders"),
    ('[[runs]]\nname = "a{seed}"\ngroup = "g"\nproduct = { seed = [] }', "product key 'seed'"),
    ('[[runs]]\nname = "b"\nlike = "a"', r"like = 'a' names no earlier run"),
    ('[[runs]]\nname = "a"', r"run 0 \('a'\): missing key 'group'"),
    ('[[runs]]\ngroup = "g"', "every run needs a name"),
    ('[defaults]\nepoch = 3\n[[runs]]\nname = "a"\ngroup = "g"', r"\[defaults\]: unknown setting"),
    ('runs = []', "no runs"),
    ('grid = 1\n[[runs]]\nname = "a"\ngroup = "g"', "unknown top-level key"),
    ('[[runs]\nname = "a"', "not valid TOML"),
])
def test_malformed_grids_are_errors_naming_file_run_and_key(text, message):
    with pytest.raises(GridError, match=message):
        parse_grid(text, "my.toml", "my")


def test_load_grid_by_name_or_path(tmp_path: Path):
    path = tmp_path / "tiny.toml"
    path.write_text('[[runs]]\nname = "s"\ngroup = "softmax"\nmodel = "softmax"\n')
    grid = load_grid(str(path))
    assert (grid.name, grid.spec, len(grid)) == ("tiny", str(path), 1)
    assert load_grid("lab").spec == "lab" and load_grid("lab").source == "training/grids/lab.toml"
    with pytest.raises(GridError, match="unknown grid 'huge'.*lab"):
        load_grid("huge")
    assert set(config.shipped_grids()) >= {"lab", "quick", "experiments"}


def test_overrides_are_checked():
    run = config.run_config("lab", 12)
    assert run.with_overrides(epochs=3).epochs == 3
    assert run.with_overrides(learning_rate=1).learning_rate == 1  # an int where a float goes
    with pytest.raises(KeyError, match="unknown run setting 'epoch'"):
        run.with_overrides(epoch=3)
    with pytest.raises(TypeError, match="epochs must be int"):
        run.with_overrides(epochs="3")
    with pytest.raises(ValueError, match="invalid optimizer='rmsprop'"):
        run.with_overrides(optimizer="rmsprop")
    # fewer epochs than the clean phase: the phase is dropped, not an error
    optimized = config.run_config("lab", 22)
    assert optimized.with_epochs(10).clean_epochs == 0
    assert optimized.with_epochs(11).clean_epochs == 10
    with pytest.raises(ValueError, match="invalid clean_epochs=11"):
        optimized.with_overrides(epochs=10, clean_epochs=11)


# --- the shipped grids -------------------------------------------------------------------------
def test_lab_grid_is_the_seed_lab_plus_two_recipes():
    runs = config.grid("lab")
    assert len(runs) == 23
    assert len({r.name for r in runs}) == len(runs)
    assert runs[0].model == "softmax" and (runs[0].optimizer, runs[0].learning_rate) == ("sgd", 0.01)
    grid_runs = runs[1:17]
    assert {r.group for r in grid_runs} == {"grid"}
    assert [(r.optimizer, r.learning_rate, r.activation, r.batch_size) for r in grid_runs] == list(
        itertools.product(("sgd", "adam"), (0.001, 0.0001), ("sigmoid", "relu"), (50, 128)))
    assert {r.epochs for r in runs[:21]} == {5}
    lab = {(r.optimizer, r.learning_rate, r.activation) for r in runs[17:20]}
    assert lab == {("sgd", 0.1, "sigmoid"), ("sgd", 0.1, "relu"), ("adam", 0.1, "relu")}
    dropout = runs[20]
    assert (dropout.group, dropout.optimizer, dropout.learning_rate, dropout.activation,
            dropout.batch_size, dropout.dropout) == ("dropout", "adam", 0.001, "relu", 128, 0.25)
    faithful, optimized = runs[21], runs[22]
    assert (faithful.model, faithful.group, faithful.augment, faithful.dropout,
            faithful.epochs) == ("lenet5", "recipe", True, 0.0, 30)
    assert (optimized.model, optimized.group, optimized.elastic_alpha, optimized.clean_epochs,
            optimized.clean_bn_statistics, optimized.epochs) == (
        "lenet5_bn", "optimized", 17.0, 10, True, 50)


def test_lab_runs_are_the_experiments_runs_the_write_up_cites():
    lab, experiments = config.grid("lab"), config.grid("experiments")
    assert lab[:21] == experiments[:21]
    assert lab[21] == experiments[23] and lab[22] == experiments[41]


def test_quick_grid_tells_the_story_on_a_budget():
    quick = config.grid("quick")
    assert {r.model for r in quick} == {"softmax", "lenet5", "lenet5_bn"}
    lenet = [r for r in quick if r.model == "lenet5"]
    assert {(r.optimizer, r.activation) for r in lenet} == set(
        itertools.product(("sgd", "adam"), ("sigmoid", "relu")))
    assert all(r.train_limit and r.train_limit <= 20000 for r in quick)
    optimized = quick[-1]
    assert optimized.group == "optimized" and optimized.clean_epochs and optimized.elastic_alpha


def test_the_runner_starts_the_costliest_runs_first():
    runs = config.grid("experiments")
    costs = {r.name: grid_runner.cost(r) for r in runs}
    assert costs["lenet5bn-recipe-elastic"] > costs["lenet5bn-recipe"] > costs["lenet5-recipe"]


def test_mixed_precision_is_a_checked_setting_off_in_every_shipped_run():
    grid = _grid("""
        [defaults]
        mixed_precision = true
        [[runs]]
        name = "a"
        group = "g"
        [[runs]]
        name = "b"
        like = "a"
        mixed_precision = false
        """)
    assert [r.mixed_precision for r in grid.runs] == [True, False]
    assert grid.runs[0].to_dict()["mixed_precision"] is True  # recorded with the run's config
    with pytest.raises(GridError, match=r"run 0 \('a'\): mixed_precision must be bool"):
        _grid('[[runs]]\nname = "a"\ngroup = "g"\nmixed_precision = 1')
    run = config.run_config("lab", 12)
    assert run.with_overrides(mixed_precision=True).mixed_precision is True
    with pytest.raises(TypeError, match="mixed_precision must be bool"):
        run.with_overrides(mixed_precision="yes")
    # An option for GPU clusters: no shipped run changes.
    for name in config.shipped_grids():
        assert not any(r.mixed_precision for r in config.grid(name)), name
