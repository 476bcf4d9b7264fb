"""Typed server settings from command-line flags and the environment.

Flag names are TensorFlow Serving's where it has one (``--port``, ``--rest_api_port``,
``--model_name``, ``--model_base_path``, ``--file_system_poll_wait_seconds``,
``--enable_batching``, ``--rest_api_num_threads``, ``--grpc_max_threads``,
``--rest_api_timeout_in_ms``, ``--enable_model_warmup``), so a manifest can swap our image for
``tensorflow/serving``; the rest are ours. Each flag may also come from the environment as
``SERVING_<FLAG IN UPPER CASE>`` (e.g. ``SERVING_MODEL_BASE_PATH``). A flag beats the environment
beats the default; an unknown flag or a malformed value is an error (exit status 2).

Both ``--flag value`` and TF Serving's ``--flag=value`` spellings work; booleans accept
``--enable_batching``, ``--enable_batching=true`` and ``--enable_batching=false``.

Each flag is defined once, here: its type, default and help are a field of ``Settings``. The
modules below take their values from a ``Settings`` and use its field defaults as their own
(e.g. ``create_app(max_request_bytes=Settings.max_request_bytes)``). The supervisor hands the
parsed settings to every worker process as JSON in ``SERVING_SETTINGS_JSON``, beside the
Prometheus multi-process directory in ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contract import DEFAULT_MODEL_BASE_PATH, GRPC_PORT, MODEL_NAME, REST_PORT
from contract.types import VERSION_POLICY_PATTERN

ENV_PREFIX = "SERVING_"
# What the supervisor hands to every worker process through the environment (not flags):
SETTINGS_ENV = "SERVING_SETTINGS_JSON"  # these settings, as JSON
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the directory where all processes' metrics meet
CONTROL_NONE = "none"  # --model_control_mode: the models change only with the config file
CONTROL_EXPLICIT = "explicit"  # ... and through the runtime APIs (reload, load, unload)
STATE_DIR_ENV = "SERVING_STATE_DIR"  # the directory of the desired models (serving.core.control)
_LABELS = re.compile(r"^([A-Za-z0-9_.-]+=[0-9]+)(,[A-Za-z0-9_.-]+=[0-9]+)*$")


@dataclass(frozen=True)
class Settings:
    """Everything the server reads at start-up; each field is one flag."""

    model_name: str = field(default=MODEL_NAME, metadata={"help": "name clients address"})
    model_base_path: str = field(
        default=str(DEFAULT_MODEL_BASE_PATH),
        metadata={"help": "directory holding integer version directories with model.onnx"},
    )
    model_config_file: str = field(
        default="",
        metadata={
            "help": "TF Serving's ModelServerConfig in text format listing the models to serve "
            "(name, base_path, model_version_policy, version_labels); replaces --model_name, "
            "--model_base_path, --model_version_policy and --version_labels"
        },
    )
    model_config_file_poll_wait_seconds: float = field(
        default=0.0,
        metadata={
            "help": "re-read --model_config_file this often and apply a changed one (a broken "
            "one is refused with a log line, the models serving keep serving); 0 = read at start only"
        },
    )
    model_control_mode: str = field(
        default=CONTROL_NONE,
        metadata={
            "help": "none: the models change only with the config file; explicit: also through "
            "gRPC HandleReloadConfigRequest and the V2 repository's load/unload (anyone who "
            "reaches a port may then unload every model)"
        },
    )
    strict_readiness: bool = field(
        default=True,
        metadata={
            "help": "ready (/readyz, /v2/health/ready, gRPC health) only when every configured "
            "model has a version AVAILABLE (Triton's --strict-readiness); false: when any does"
        },
    )
    port: int = field(default=GRPC_PORT, metadata={"help": "gRPC port"})
    rest_api_port: int = field(default=REST_PORT, metadata={"help": "REST port; 0 disables REST"})
    host: str = field(default="0.0.0.0", metadata={"help": "address both servers bind"})
    file_system_poll_wait_seconds: float = field(
        default=1.0,
        metadata={"help": "seconds between repository scans; 0 scans once at start-up"},
    )
    model_version_policy: str = field(
        default="latest:1",
        metadata={"help": "versions to serve: latest:N, all, or specific:V1,V2"},
    )
    version_labels: str = field(
        default="", metadata={"help": "labels for versions, e.g. stable=1,canary=2"}
    )
    enable_model_warmup: bool = field(
        default=True, metadata={"help": "run one inference on a new version before it serves"}
    )
    max_num_load_retries: int = field(
        default=5,
        metadata={
            "help": "retries of a failed version load with unchanged files before it counts as "
            "failed; 0 = one attempt (TF Serving's; changed files always get a fresh count)"
        },
    )
    load_retry_interval_micros: int = field(
        default=60_000_000,
        metadata={
            "help": "least time between two load attempts of a version with unchanged files; "
            "negative = no wait, retried at the next scan (TF Serving's)"
        },
    )
    enable_batching: bool = field(
        default=False, metadata={"help": "batch concurrent requests inside each worker"}
    )
    max_batch_size: int = field(
        default=64, metadata={"help": "most images merged into one batched model run"}
    )
    batch_timeout_micros: int = field(
        default=1000,
        metadata={
            "help": "TF Serving's flag, accepted; never waited out: a batch is cut the moment "
            "the model is free (serving/core/batching.py)"
        },
    )
    max_enqueued_batches: int = field(
        default=8,
        metadata={"help": "queue bound in batches; beyond it requests get RESOURCE_EXHAUSTED/429"},
    )
    num_workers: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "worker processes per protocol (REST and gRPC); default: CPU count"},
    )
    rest_api_num_threads: int = field(
        default=1, metadata={"help": "request threads per REST worker process"}
    )
    grpc_max_threads: int = field(
        default=4, metadata={"help": "request threads per gRPC worker process"}
    )
    cpu_affinity: bool = field(
        default=False,
        metadata={
            "help": "pin each worker process to one CPU (REST and gRPC worker i share CPU i of the "
            "allowed set): fewer cross-core wake-ups, for CPUs the server has to itself"
        },
    )
    tensorflow_intra_op_parallelism: int = field(
        default=1,
        metadata={"help": "ONNX Runtime intra-op threads per worker (the workers already use every core)"},
    )
    rest_api_timeout_in_ms: int = field(
        default=30000, metadata={"help": "deadline of a REST request inside the server"}
    )
    rest_api_header_timeout_in_ms: int = field(
        default=10000,
        metadata={"help": "REST: a request's headers must arrive within this, else it is closed"},
    )
    rest_api_body_timeout_in_ms: int = field(
        default=30000,
        metadata={"help": "REST: a request's body must arrive within this, else 408 and closed"},
    )
    rest_api_interface: str = field(
        default="rsgi",
        metadata={
            "help": "REST workers: rsgi reads bodies off-thread under the deadline (safe facing "
            "slow clients); wsgi is granian's WSGI, a little cheaper per request, but a half-sent "
            "body holds a thread: only behind a proxy that buffers whole requests"
        },
    )
    rest_api_max_connections: int = field(
        default=512,
        metadata={"help": "open REST connections per worker; beyond it new ones wait to be accepted"},
    )
    max_request_bytes: int = field(
        default=32 * 1024 * 1024,
        metadata={"help": "largest REST body (413 beyond) and gRPC message accepted"},
    )
    quality_sample_every: int = field(
        default=10,
        metadata={
            "help": "model-quality input statistics of every K-th image a worker answers "
            "(1 = all); digit counts and confidence always cover every image"
        },
    )
    shutdown_grace_period_seconds: float = field(
        default=20.0,
        metadata={"help": "on SIGTERM, time for in-flight requests before workers are killed"},
    )
    shutdown_drain_seconds: float = field(
        default=2.0,
        metadata={
            "help": "on SIGTERM, readiness answers 503 / NOT_SERVING at once but requests are "
            "still served this long (load balancers see the probe fail before listeners close); "
            "part of --shutdown_grace_period_seconds; 0 = listeners close at once"
        },
    )
    max_worker_restarts: int = field(
        default=5,
        metadata={
            "help": "restarts of one worker within --worker_restart_window_seconds; one more "
            "crash stops the server (exit status 1); negative = restart forever"
        },
    )
    worker_restart_window_seconds: float = field(
        default=60.0,
        metadata={"help": "crashes older than this are forgotten; 0 = none ever is"},
    )
    access_log: bool = field(
        default=True, metadata={"help": "log one JSON line per request (probes excluded)"}
    )
    log_level: str = field(default="INFO", metadata={"help": "logging level"})

    def to_json(self) -> str:
        """Serialise for a worker process (the environment carries it across exec)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))

    @classmethod
    def from_worker_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the supervisor handed to this worker process (``SETTINGS_ENV``)."""
        return cls.from_json((os.environ if environ is None else environ)[SETTINGS_ENV])

    @property
    def version_label_map(self) -> dict[str, int]:
        """``version_labels`` parsed into label -> version."""
        if not self.version_labels:
            return {}
        return {k: int(v) for k, v in (item.split("=") for item in self.version_labels.split(","))}


def parse_bool(text: str) -> bool:
    """A boolean flag's or environment variable's value: true/false, 1/0, yes/no, on/off."""
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(f: dataclasses.Field) -> Any:
    return {bool: parse_bool, int: int, float: float, str: str}[
        {"bool": bool, "int": int, "float": float, "str": str}[f.type]
    ]


def build_parser() -> argparse.ArgumentParser:
    """The flag parser; each field of ``Settings`` is one ``--flag``."""
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="TF Serving-compatible ONNX Runtime model server for the digits model.",
        allow_abbrev=False,  # a typo must fail, not silently match another flag
    )
    for f in dataclasses.fields(Settings):
        kwargs: dict[str, Any] = {
            "type": _converter(f),
            "default": None,
            "help": f.metadata["help"],
        }
        if f.type == "bool":
            kwargs.update(nargs="?", const=True)
        parser.add_argument(f"--{f.name}", dest=f.name, **kwargs)
    return parser


_AT_LEAST_ONE = (
    "num_workers",
    "rest_api_num_threads",
    "grpc_max_threads",
    "max_batch_size",
    "max_enqueued_batches",
    "tensorflow_intra_op_parallelism",
    "max_request_bytes",
    "rest_api_max_connections",
    "rest_api_header_timeout_in_ms",
    "rest_api_body_timeout_in_ms",
    "quality_sample_every",
)


def _model_problems(settings: Settings) -> list[str]:
    problems = []
    if not settings.model_name:
        problems.append("--model_name must not be empty")
    if not VERSION_POLICY_PATTERN.match(settings.model_version_policy):
        problems.append("--model_version_policy must be latest:N, all or specific:V1,V2")
    if settings.version_labels and not _LABELS.match(settings.version_labels):
        problems.append("--version_labels must look like stable=1,canary=2")
    if settings.model_control_mode not in (CONTROL_NONE, CONTROL_EXPLICIT):
        problems.append(f"--model_control_mode must be {CONTROL_NONE} or {CONTROL_EXPLICIT}")
    if settings.model_config_file_poll_wait_seconds < 0:
        problems.append("--model_config_file_poll_wait_seconds must not be negative")
    return problems


def _number_problems(settings: Settings) -> list[str]:
    problems = [f"--{name} must be at least 1" for name in _AT_LEAST_ONE if getattr(settings, name) < 1]
    problems += [
        f"--{name} must be a port number"
        for name in ("port", "rest_api_port")
        if not 0 <= getattr(settings, name) <= 65535
    ]
    return problems


def _server_problems(settings: Settings) -> list[str]:
    problems = []
    if settings.rest_api_interface not in ("rsgi", "wsgi"):
        problems.append("--rest_api_interface must be rsgi or wsgi")
    if settings.port == 0:
        problems.append("--port (gRPC) must not be 0")
    if settings.port == settings.rest_api_port:
        problems.append("--port and --rest_api_port must differ")
    if settings.batch_timeout_micros < 0 or settings.rest_api_timeout_in_ms < 1:
        problems.append("timeouts must be positive")
    if settings.shutdown_grace_period_seconds < 0:
        problems.append("--shutdown_grace_period_seconds must not be negative")
    return problems


def _check(settings: Settings) -> None:
    problems = _model_problems(settings) + _number_problems(settings) + _server_problems(settings)
    if problems:
        raise ValueError("; ".join(problems))


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from ``argv`` (default: sys.argv) over ``environ`` (default: os.environ).

    Exits with status 2 and a usage message on an unknown flag or a malformed value.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        flag_value = getattr(args, f.name)
        if flag_value is not None:
            values[f.name] = flag_value
            continue
        env_value = env.get(ENV_PREFIX + f.name.upper())
        if env_value is not None:
            try:
                values[f.name] = _converter(f)(env_value)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"{ENV_PREFIX + f.name.upper()}={env_value!r}: {exc}")
    settings = Settings(**values)
    try:
        _check(settings)
    except ValueError as exc:
        parser.error(str(exc))
    return settings
