"""The lab grid is declared completely and the same on every machine."""

from __future__ import annotations

import itertools

import pytest

from training import config
from training import grid as grid_runner


def test_lab_grid_expansion():
    runs = config.grid("lab")
    assert len(runs) == 55
    assert len({r.name for r in runs}) == len(runs)
    grid_runs = [r for r in runs if r.group == "grid"]
    assert [r.name for r in runs[1:17]] == [r.name for r in grid_runs]
    assert {(r.optimizer, r.learning_rate, r.activation, r.batch_size) for r in grid_runs} == set(
        itertools.product(("sgd", "adam"), (0.001, 0.0001), ("sigmoid", "relu"), (50, 128)))
    assert runs[0].model == "softmax" and (runs[0].optimizer, runs[0].learning_rate) == ("sgd", 0.01)
    lab = {(r.optimizer, r.learning_rate, r.activation) for r in runs if r.group == "lab"}
    assert lab == {("sgd", 0.1, "sigmoid"), ("sgd", 0.1, "relu"), ("adam", 0.1, "relu")}
    dropout = next(r for r in runs if r.group == "dropout")
    assert (dropout.optimizer, dropout.learning_rate, dropout.activation, dropout.batch_size,
            dropout.dropout) == ("adam", 0.001, "relu", 128, 0.25)
    assert runs[22].model == "lenet5_bn" and runs[22].group == "optimized"
    assert [r.group for r in runs[21:]] == ["recipe", "optimized", "recipe"] + ["optimized"] * 31
    assert {r.model for r in runs[22:] if r.group == "optimized"} == {"lenet5_bn", "lenet5_bn_wide"}


def test_elastic_runs_and_their_cost_order():
    runs = config.grid("lab")
    elastic = [r for r in runs if r.elastic_alpha]
    assert elastic and all(r.augment and r.group == "optimized" for r in elastic)
    assert all(r.model in ("lenet5_bn", "lenet5_bn_wide") for r in elastic)
    # the grid runner starts the longest first: every model has a cost, distortions add to it
    costs = {r.name: grid_runner.cost(r) for r in runs}
    assert costs["lenet5bn-recipe-elastic"] > costs["lenet5bn-recipe"] > costs["lenet5-recipe"]
    with pytest.raises(ValueError, match="invalid elastic_alpha=-1.0"):
        runs[22].with_overrides(elastic_alpha=-1.0)


def test_clean_bn_statistics_runs_are_elastic_batch_norm_runs():
    runs = config.grid("lab")
    clean = [i for i, r in enumerate(runs) if r.clean_bn_statistics]
    assert clean == list(range(35, 55))
    assert all(runs[i].elastic_alpha and runs[i].model.startswith("lenet5_bn") for i in clean)
    settings = {(runs[i].model, runs[i].seed, runs[i].epochs, runs[i].clean_epochs,
                 runs[i].elastic_alpha) for i in clean}
    assert len(settings) == len(clean)


def test_clean_phase_runs_repeat_earlier_runs_with_a_clean_ending():
    runs = config.grid("lab")
    assert [i for i, r in enumerate(runs) if r.clean_epochs] == list(range(41, 55))
    for i, base in ((41, 35), (42, 36), (45, 37), (46, 38)):
        assert runs[i].with_overrides(name=runs[base].name, clean_epochs=0) == runs[base]
    for i, base in ((43, 32), (44, 34)):  # and clean statistics
        assert runs[i].with_overrides(name=runs[base].name, clean_epochs=0,
                                      clean_bn_statistics=False) == runs[base]
    for i, base in ((49, 41), (50, 42), (51, 43), (52, 44)):  # other seeds
        assert runs[i].with_overrides(name=runs[base].name, seed=runs[base].seed) == runs[base]
    for i, base in ((53, 41), (54, 42)):  # a stronger elastic distortion
        assert runs[i].with_overrides(name=runs[base].name, elastic_alpha=17.0) == runs[base]
    for i, base in ((47, 41), (48, 42)):  # a longer clean ending
        assert runs[i].with_overrides(name=runs[base].name, clean_epochs=10) == runs[base]
    with pytest.raises(ValueError, match="invalid clean_epochs=11"):
        runs[41].with_overrides(epochs=10, clean_epochs=11)
    # fewer epochs than the clean phase: the phase is dropped, not an error
    assert runs[41].with_epochs(10).clean_epochs == 0
    assert runs[41].with_epochs(11).clean_epochs == 10
    assert config.grid("quick")[41].clean_epochs == 0


def test_quick_grid_has_the_same_runs_with_one_epoch():
    lab, quick = config.grid("lab"), config.grid("quick")
    assert [r.name for r in lab] == [r.name for r in quick]
    assert {r.epochs for r in quick} == {1}


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


def test_unknown_grid_and_index():
    with pytest.raises(KeyError, match="unknown grid"):
        config.grid("huge")
    with pytest.raises(IndexError, match="runs 0..54"):
        config.run_config("lab", 55)
