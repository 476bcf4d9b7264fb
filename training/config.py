"""Run settings and grids: a grid is a TOML file of runs, numbered once and for all.

A :class:`RunConfig` is one run: architecture and training knobs, all a run needs to be
reproduced. A grid file declares runs (see training/grids/README.md for the format): single runs,
runs ``like`` an earlier one with some settings changed, and ``product`` tables (the cartesian
product of some settings' values, last key fastest). Run N of a file means the same run on every
machine (a Kubernetes Indexed Job gives pod N run N), so shipped grids only ever grow at the end.

``--grid NAME`` picks a shipped grid (training/grids/NAME.toml: ``lab``, the product grid;
``quick``, the demo; ``experiments``, the research log); ``--grid path/to/file.toml`` a user's.
Every mistake in a file (unknown key, wrong type, invalid value, duplicate name) is a
:class:`GridError` naming the file, the run and the key. :class:`Overrides` are the command
line's checked changes to a grid's runs (``--epochs``, ``--train-limit``, ``--set``).

A file may also declare ``[[ensembles]]``: committees of its LeNet-5-family runs that ``export
--ensemble NAME`` chooses on validation and publishes as one model (:class:`EnsembleSpec`).
They are read after the runs and change nothing in them (nor their digests).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shlex
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

MODELS = ("softmax", "lenet5", "lenet5_bn", "lenet5_bn_wide")
OPTIMIZERS = ("sgd", "adam")
ACTIVATIONS = ("sigmoid", "relu")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class RunConfig:
    """One training run: architecture and training knobs, all a run needs to be reproduced."""

    name: str
    group: str  # softmax | grid | lab | dropout | recipe | optimized (for reports)
    model: str = "lenet5"  # softmax | lenet5 (the lab's) | lenet5_bn, lenet5_bn_wide (optimized)
    optimizer: str = "adam"
    learning_rate: float = 0.001
    activation: str = "relu"
    batch_size: int = 128
    dropout: float = 0.0  # drop rate: the lab's keep probability 0.75 is dropout 0.25
    augment: bool = False  # random shifts/rotations/zoom of the training images
    # Elastic distortions (Simard 2003) after those: displacement scale alpha (0: none) and
    # smoothness sigma, in pixels. Simard used alpha 34, sigma 4.
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    schedule: str = "constant"  # learning rate: constant, or cosine decay to zero
    # After training, replace batch norm's running statistics (averaged over distorted training
    # batches) by the exact statistics of the clean training images the model will be served.
    clean_bn_statistics: bool = False
    # Train the last N epochs on the clean (undistorted) training images: the distortions
    # anneal away, and the final low-learning-rate epochs fit the images the model will serve.
    clean_epochs: int = 0
    epochs: int = 5  # the lab runs; the two recipe runs train for 30
    seed: int = 1
    train_limit: int | None = None  # train on the first N training images only (tests)
    # Train in mixed precision on a GPU: Keras' mixed_float16 policy (float16 compute, float32
    # weights, loss scaling), the logits in float32; the saved model is float32. Refused on
    # a CPU (training/devices.py says why).
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        checks = {
            "model": self.model in MODELS,
            "optimizer": self.optimizer in OPTIMIZERS,
            "activation": self.activation in ACTIVATIONS,
            "schedule": self.schedule in SCHEDULES,
            "learning_rate": self.learning_rate > 0,
            "batch_size": self.batch_size > 0,
            "dropout": 0.0 <= self.dropout < 1.0,
            "elastic_alpha": self.elastic_alpha >= 0.0,
            "elastic_sigma": self.elastic_sigma > 0.0,
            "epochs": self.epochs > 0,
            "clean_epochs": 0 <= self.clean_epochs <= self.epochs,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            settings = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"run {self.name!r}: invalid {settings}")

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """A copy with checked overrides: an unknown key or a wrong type is an error."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for key, value in overrides.items():
            if key not in fields:
                raise KeyError(f"unknown run setting {key!r}; known: {', '.join(fields)}")
            overrides[key] = _checked_type(key, value, _FIELD_TYPES[key])
        return dataclasses.replace(self, **overrides)

    def with_epochs(self, epochs: int) -> RunConfig:
        """A copy trained for ``epochs``; a clean phase that no longer fits is dropped (the
        quick grid's one epoch, or ``--epochs`` below ``clean_epochs``)."""
        clean = self.clean_epochs if self.clean_epochs < epochs else 0
        return self.with_overrides(epochs=epochs, clean_epochs=clean)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(**data)


@dataclass(frozen=True)
class Overrides:
    """The command line's changes to a grid's runs: ``--epochs``, ``--train-limit`` and
    ``--set [INDEX:]KEY=VALUE`` (a JSON value, else the text; with ``INDEX:``, that run only).

    :meth:`apply` gives the resolved config of a run, checked (an unknown setting, a wrong type
    or a bad ``--set`` is an error); :meth:`flags` the same changes as a run process's flags.
    """

    epochs: int | None = None
    train_limit: int | None = None
    settings: tuple[str, ...] = ()

    def apply(self, config: RunConfig, index: int) -> RunConfig:
        """Run ``index``'s ``config`` with the changes: ``--epochs`` first (a clean phase that
        no longer fits is dropped), then ``--train-limit`` and ``--set``."""
        if self.epochs is not None:
            config = config.with_epochs(self.epochs)
        values: dict[str, Any] = {}
        if self.train_limit is not None:
            values["train_limit"] = self.train_limit
        for item in self.settings:
            values.update(_setting(item, index))
        return config.with_overrides(**values)

    def flags(self) -> list[str]:
        out = []
        if self.epochs is not None:
            out += ["--epochs", str(self.epochs)]
        if self.train_limit is not None:
            out += ["--train-limit", str(self.train_limit)]
        for item in self.settings:
            out += ["--set", item]
        return out


def _setting(item: str, index: int) -> dict[str, Any]:
    """One ``--set [INDEX:]KEY=VALUE`` as {KEY: value}, or {} when it is for another run."""
    head = item.split("=")[0]
    target, _, assignment = item.partition(":") if ":" in head else ("", "", item)
    key, sep, text = assignment.partition("=")
    if not sep or not key or (target and not target.isdigit()):
        raise ValueError(f"--set {item!r}: expected [INDEX:]KEY=VALUE")
    if target and int(target) != index:
        return {}
    try:
        return {key: json.loads(text)}
    except json.JSONDecodeError:
        return {key: text}


def set_flags(changes: dict[str, Any]) -> list[str]:
    """``--set KEY=VALUE`` flags, shell-quoted, that make a run's config take these values."""
    out = []
    for key, value in changes.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out += ["--set", shlex.quote(f"{key}={text}")]
    return out


def _field_types() -> dict[str, tuple[type, ...]]:
    """Each RunConfig field's accepted value types (``int | None`` -> (int, NoneType))."""
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for name, hint in hints.items():
        out[name] = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return out


_FIELD_TYPES = _field_types()


def _checked_type(key: str, value: Any, allowed: tuple[type, ...]) -> Any:
    """``value`` if it has one of the ``allowed`` types (an int where a float goes becomes a
    float; a bool is never taken for a number); TypeError otherwise."""
    if value is None:
        if type(None) in allowed:
            return value
    elif isinstance(value, bool):  # before int: True is an int to isinstance
        if bool in allowed:
            return value
    elif isinstance(value, allowed):
        return value
    elif float in allowed and isinstance(value, int):
        return float(value)
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise TypeError(f"{key} must be {names}, got {value!r}")


# --- Grid files ---------------------------------------------------------------------------------
SHIPPED = resources.files("training") / "grids"
_FILE_KEYS = {"description", "defaults", "runs", "ensembles"}
_RUN_KEYS = {"like", "product"}  # besides the RunConfig fields
_ENSEMBLE_KEYS = {"name", "group", "runs", "max_members"}
ENSEMBLE_MODELS = ("lenet5", "lenet5_bn")  # the LeNet-5 family a committee is made of
_ENSEMBLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # it names a directory


class GridError(ValueError):
    """A grid that cannot be read; the message names the file, the run and the key."""


@dataclass(frozen=True)
class EnsembleSpec:
    """An ``[[ensembles]]`` table: a committee of the grid's runs, its members chosen on
    validation by ``export --ensemble`` (training/ensemble_selection.py).

    ``candidates`` are run indices (a ``group``'s runs in grid order, or the ``runs`` named);
    the committee takes the best ``max_members`` of them at most (default: all).
    """

    name: str  # unique in the file; also the default export directory, models/<name>
    candidates: tuple[int, ...]
    max_members: int | None = None

    @property
    def limit(self) -> int:
        """The most members the committee may take."""
        return min(self.max_members or len(self.candidates), len(self.candidates))


@dataclass(frozen=True)
class Grid:
    """A grid file's runs, in index order.

    ``name`` names its directory under --runs-dir (the file's stem); ``spec`` is what --grid
    takes to find it again (``lab``, or the file's path); ``source`` the file, for messages.
    """

    name: str
    spec: str
    source: str
    description: str
    runs: tuple[RunConfig, ...]
    ensembles: tuple[EnsembleSpec, ...] = ()

    def __len__(self) -> int:
        return len(self.runs)

    def ensemble(self, name: str) -> EnsembleSpec:
        for spec in self.ensembles:
            if spec.name == name:
                return spec
        known = ", ".join(e.name for e in self.ensembles) or "none"
        raise KeyError(f"grid {self.name!r} declares no ensemble {name!r} (its [[ensembles]]: "
                       f"{known})")

    def run(self, index: int) -> RunConfig:
        if not 0 <= index < len(self.runs):
            raise IndexError(f"grid {self.name!r} has runs 0..{len(self.runs) - 1}, not {index}")
        return self.runs[index]


def shipped_grids() -> list[str]:
    """Names of the grids that ship with the package (training/grids/*.toml)."""
    return sorted(p.name[:-5] for p in SHIPPED.iterdir() if p.name.endswith(".toml"))


def _expand(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One [[runs]] entry -> the settings of each run it declares (a product gives several)."""
    product = entry.pop("product", None)
    if product is None:
        return [entry]
    if not isinstance(product, dict) or not product:
        raise GridError(f"{where}: 'product' must be a table of setting = [values]")
    for key, values in product.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{where}: product key {key!r} must be a non-empty list of values")
        if key in entry:
            raise GridError(f"{where}: {key!r} is set both in the run and in its product")
    name = entry.get("name", "")
    if not any("{" + key + "}" in name for key in product):
        raise GridError(f"{where}: a product's name must contain {{key}} placeholders "
                        f"(e.g. {{{next(iter(product))}}}) so every run gets its own name")
    out = []
    for combination in itertools.product(*product.values()):
        values = dict(zip(product, combination, strict=True))
        out.append({**entry, **values, "name": name.format(**values)})
    return out


def parse_grid(text: str, source: str, grid_name: str, spec: str | None = None) -> Grid:
    """Parse a grid file's text; ``source`` names it in errors (see :class:`Grid`)."""
    document = _read_toml(text, source)
    defaults, entries = _sections(document, source)
    description = str(document.get("description", "")).strip()
    runs = tuple(_runs(entries, defaults, source))
    ensembles = tuple(_ensembles(document.get("ensembles", []), runs, source))
    return Grid(name=grid_name, spec=spec or source, source=source, description=description,
                runs=runs, ensembles=ensembles)


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{source}: not valid TOML: {exc}") from None


def _sections(document: dict[str, Any], source: str) -> tuple[dict[str, Any], list[Any]]:
    """The file's [defaults] (checked: known settings only) and its [[runs]] entries."""
    unknown = sorted(set(document) - _FILE_KEYS)
    if unknown:
        raise GridError(f"{source}: unknown top-level key(s) {unknown}; "
                        f"a grid file has {sorted(_FILE_KEYS)}")
    defaults = document.get("defaults", {})
    entries = document.get("runs", [])
    if not isinstance(defaults, dict):
        raise GridError(f"{source}: [defaults] must be a table of run settings")
    if not isinstance(entries, list) or not entries:
        raise GridError(f"{source}: no runs: declare them as [[runs]] tables")
    fields = set(_FIELD_TYPES)
    bad = sorted(set(defaults) - (fields - {"name"}))
    if bad:
        raise GridError(f"{source}: [defaults]: unknown setting(s) {bad}; known: {sorted(fields)}")
    return defaults, entries


def _runs(entries: list[Any], defaults: dict[str, Any], source: str) -> list[RunConfig]:
    """The runs the [[runs]] entries declare, in index order; names unique."""
    runs: list[RunConfig] = []
    by_name: dict[str, RunConfig] = {}
    for number, entry in enumerate(entries):
        label = entry.get("name", "?") if isinstance(entry, dict) else "?"
        where = f"{source}: [[runs]] #{number + 1} ({label!r})"
        entry = _checked_entry(entry, where)
        base = _base(entry.pop("like", None), defaults, by_name, where)
        for settings in _expand(entry, where):
            name = settings.get("name")
            if not isinstance(name, str) or not name:
                raise GridError(f"{where}: every run needs a name")
            where_run = f"{source}: run {len(runs)} ({name!r})"
            if name in by_name:
                raise GridError(f"{where_run}: duplicate run name (run "
                                f"{[r.name for r in runs].index(name)} has it)")
            config = _run_config({**base, **settings}, where_run)
            runs.append(config)
            by_name[name] = config
    return runs


def _checked_entry(entry: Any, where: str) -> dict[str, Any]:
    """A copy of one [[runs]] entry, which must be a table of known keys."""
    if not isinstance(entry, dict):
        raise GridError(f"{where}: must be a table")
    fields = set(_FIELD_TYPES)
    unknown = sorted(set(entry) - fields - _RUN_KEYS)
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; known: "
                        f"{sorted(fields | _RUN_KEYS)}")
    return dict(entry)


def _base(like: Any, defaults: dict[str, Any], by_name: dict[str, RunConfig],
          where: str) -> dict[str, Any]:
    """The settings an entry starts from: the run it is ``like`` (but its name), else [defaults]."""
    if like is None:
        return dict(defaults)
    if like not in by_name:
        raise GridError(f"{where}: like = {like!r} names no earlier run of this file")
    return {k: v for k, v in by_name[like].to_dict().items() if k != "name"}


def _run_config(settings: dict[str, Any], where: str) -> RunConfig:
    """One run's complete settings, checked (types, then values) into a :class:`RunConfig`."""
    if "group" not in settings:
        raise GridError(f"{where}: missing key 'group' (a label for reports)")
    try:
        checked = {k: _checked_type(k, v, _FIELD_TYPES[k]) for k, v in settings.items()}
        return RunConfig(**checked)
    except (TypeError, ValueError) as exc:
        raise GridError(f"{where}: {exc}") from None


# --- Ensembles ------------------------------------------------------------------------------------
def _ensembles(entries: Any, runs: Sequence[RunConfig], source: str) -> list[EnsembleSpec]:
    """The committees the [[ensembles]] tables declare; names unique."""
    if not isinstance(entries, list):
        raise GridError(f"{source}: 'ensembles' must be an array of tables ([[ensembles]])")
    out: list[EnsembleSpec] = []
    for number, entry in enumerate(entries):
        label = entry.get("name", "?") if isinstance(entry, dict) else "?"
        where = f"{source}: [[ensembles]] #{number + 1} ({label!r})"
        spec = _ensemble(entry, runs, where)
        if spec.name in {e.name for e in out}:
            raise GridError(f"{where}: duplicate ensemble name")
        out.append(spec)
    return out


def _ensemble(entry: Any, runs: Sequence[RunConfig], where: str) -> EnsembleSpec:
    """One [[ensembles]] table, checked: known keys, a name, candidates of the LeNet-5 family."""
    if not isinstance(entry, dict):
        raise GridError(f"{where}: must be a table")
    unknown = sorted(set(entry) - _ENSEMBLE_KEYS)
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; known: {sorted(_ENSEMBLE_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _ENSEMBLE_NAME.fullmatch(name):
        raise GridError(f"{where}: 'name' must be letters, digits, '.', '_' or '-' (it names "
                        f"the export's directory), got {name!r}")
    candidates = _candidates(entry, runs, where)
    for index in candidates:
        if runs[index].model not in ENSEMBLE_MODELS:
            raise GridError(f"{where}: run {index} ({runs[index].name!r}) is a "
                            f"{runs[index].model!r} model; an ensemble's members are of the "
                            f"LeNet-5 family: {', '.join(ENSEMBLE_MODELS)}")
    limit = entry.get("max_members")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise GridError(f"{where}: 'max_members' must be a positive integer, got {limit!r}")
    return EnsembleSpec(name, tuple(candidates), limit)


def _candidates(entry: dict[str, Any], runs: Sequence[RunConfig], where: str) -> list[int]:
    """The run indices an ensemble chooses from: its ``group``'s runs, or its ``runs``."""
    if ("group" in entry) == ("runs" in entry):
        raise GridError(f"{where}: name its candidates with 'group' or with 'runs' (one of them)")
    if "runs" in entry:
        return _named_runs(entry["runs"], runs, where)
    group = entry["group"]
    found = [i for i, run in enumerate(runs) if run.group == group]
    if not found:
        raise GridError(f"{where}: group = {group!r}: no run of this file is in that group")
    return found


def _named_runs(items: Any, runs: Sequence[RunConfig], where: str) -> list[int]:
    """``runs = [names or indices]`` as run indices, each an existing run, none twice."""
    if not isinstance(items, list) or not items:
        raise GridError(f"{where}: 'runs' must be a non-empty list of run names or indices")
    by_name = {run.name: i for i, run in enumerate(runs)}
    out: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            index = item if 0 <= item < len(runs) else None
        else:
            index = by_name.get(item) if isinstance(item, str) else None
        if index is None:
            raise GridError(f"{where}: runs: {item!r} names no run of this file")
        if index in out:
            raise GridError(f"{where}: runs: {item!r} is named twice")
        out.append(index)
    return out


def load_grid(spec: str | Path) -> Grid:
    """A shipped grid by name (``lab``), or a grid file by path (``my-grid.toml``)."""
    text = str(spec)
    shipped = SHIPPED / f"{text}.toml"
    if "/" not in text and not text.endswith(".toml") and shipped.is_file():
        return parse_grid(shipped.read_text(), f"training/grids/{text}.toml", text, text)
    path = Path(text)
    if path.is_file():
        return parse_grid(path.read_text(), str(path), path.stem, text)
    raise GridError(f"unknown grid {text!r}: neither a shipped grid ({', '.join(shipped_grids())}) "
                    "nor a grid file")


def grid(spec: str | Path) -> tuple[RunConfig, ...]:
    """The runs of a grid (see :func:`load_grid`), in index order."""
    return load_grid(spec).runs


def run_config(spec: str | Path, index: int) -> RunConfig:
    """Run ``index`` of a grid."""
    return load_grid(spec).run(index)


