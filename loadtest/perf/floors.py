"""The floors of a perf run, measured: ONNX Runtime alone on the served model, and the transports.

- :func:`served_model_file`: the ``model.onnx`` the measured model serves (its newest version);
  :func:`measure_ort` runs :mod:`loadtest.perf.ort_floor` on it in a process of its own.
- :func:`capture`: one real answer of our server per scenario path and batch size (a raw
  request: the bytes and content type the floors must answer); :func:`start_floor` starts a
  :mod:`loadtest.perf.floor_server` on a free loopback port and returns once it answers every
  captured request with exactly our server's bytes.
- :func:`rest_interface` and :func:`floor_threads`: what a server's flags say of its stacks.

The benchmark (:mod:`loadtest.perf.bench`) runs the floors' rounds in its own round loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

import contract
from contract import model_config, v2
from loadtest.perf.floor_server import Reply, Routes, write_routes
from loadtest.perf.multiples import GRPC, WSGI, floor_label
from loadtest.server import free_port, pinned_to, stop_process

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
KEPT_HEADERS = (v2.HEADER_CONTENT_LENGTH.lower(),)  # our answers' headers the floors repeat


# --- the ONNX Runtime floor --------------------------------------------------------------------
def served_model_file(model_base_path: str | None, model_config_file: str | None, model_name: str) -> Path:
    """The newest version's ``model.onnx`` of the measured model; ValueError when there is none."""
    base = model_base_path
    if model_config_file:
        entries = {entry.name: entry for entry in model_config.read_file(model_config_file)}
        if model_name not in entries:
            raise ValueError(
                f"{model_config_file} lists no model {model_name!r} (it lists {sorted(entries)})"
            )
        base = entries[model_name].base_path
    versions = contract.model_versions(base or "")
    if not versions:
        raise ValueError(f"no version directory under {base} (the model {model_name!r})")
    return contract.version_path(base, versions[-1]) / contract.ONNX_FILENAME


def measure_ort(model: Path, images: np.ndarray, seconds: float, work: Path) -> dict[str, float]:
    """ONNX Runtime's CPU µs of ``model`` on ``images`` (loadtest.perf.ort_floor, its own process)."""
    digits = work / "ort-floor-digits.npy"
    np.save(digits, images)
    command = [
        sys.executable, "-m", "loadtest.perf.ort_floor", str(model), "--images", str(digits),
        "--seconds", f"{seconds:g}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=4 * seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the ONNX Runtime floor of {model} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- a server's stacks, from its flags ---------------------------------------------------------
def _flags(flags: str) -> argparse.Namespace:
    """The flags the floors copy (flag beats environment beats default, as the server reads them)."""
    # Here, not at the top: `python -m loadtest` (Locust's processes too) never loads the server.
    from serving.settings import ENV_PREFIX, Settings, parse_bool

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name, kind in (("rest_api_interface", str), ("rest_api_num_threads", int), ("grpc_max_threads", int)):
        default = os.environ.get(ENV_PREFIX + name.upper(), getattr(Settings, name))
        parser.add_argument(f"--{name}", type=kind, default=kind(default))
    pinned = os.environ.get(ENV_PREFIX + "CPU_AFFINITY", str(Settings.cpu_affinity))
    parser.add_argument("--cpu_affinity", type=parse_bool, nargs="?", const=True, default=parse_bool(pinned))
    return parser.parse_known_args(shlex.split(flags))[0]


def rest_interface(flags: str) -> str:
    """``rsgi`` or ``wsgi``: the REST interface of a server run with ``flags``."""
    return _flags(flags).rest_api_interface


def floor_threads(stack: str, flags: str) -> int:
    """A floor's threads, as the server run with ``flags`` has them: granian's WSGI blocking
    threads (``--rest_api_num_threads``), grpcio's pool (``--grpc_max_threads``); RSGI: 1."""
    parsed = _flags(flags)
    return {GRPC: parsed.grpc_max_threads, WSGI: parsed.rest_api_num_threads}.get(stack, 1)


def floor_cpu(flags: str) -> int | None:
    """The CPU a floor runs pinned to when the server run with ``flags`` pins its workers
    (``--cpu_affinity``: worker 0 on the first allowed CPU), else None (not pinned)."""
    return min(os.sched_getaffinity(0)) if _flags(flags).cpu_affinity else None


# --- one real answer per scenario path ---------------------------------------------------------
@dataclass(frozen=True)
class Exchange:
    """A scenario path's request (``api`` rest or grpc, the REST path or gRPC method, the body or
    unframed message, its headers) and our server's answer to it."""

    api: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    reply: Reply

    @property
    def route(self) -> tuple[str, int]:
        return self.path, len(self.body)


def ask(api: str, where: str, path: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
    """One raw request: a REST POST to ``where`` (a base URL) or a gRPC call to ``where`` (host:port)."""
    if api == "grpc":
        with grpc.insecure_channel(where) as channel:  # no (de)serializer: bytes in, bytes out
            return Reply("application/grpc", channel.unary_unary(path)(body, timeout=timeout))
    request = urllib.request.Request(where + path, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        kept = tuple((k.lower(), v) for k, v in response.headers.items() if k.lower() in KEPT_HEADERS)
        return Reply(response.headers.get("Content-Type", ""), response.read(), kept)


def capture(
    api: str, where: str, path: str, body: bytes, headers: dict[str, str], timeout: float
) -> Exchange:
    """Our server's answer to one scenario path's request, for the floors to repeat."""
    reply = ask(api, where, path, body, headers, timeout)
    return Exchange(api, path, body, tuple(headers.items()), reply)


def url_path(url: str) -> str:
    """``http://host:port/v1/models/m:predict`` -> ``/v1/models/m:predict`` (a gRPC method too)."""
    return urllib.parse.urlsplit(url).path


# --- the floor servers -------------------------------------------------------------------------
@dataclass
class FloorServer:
    """A ``python -m loadtest.perf.floor_server`` process on a loopback port."""

    stack: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def label(self) -> str:
        return floor_label(self.stack)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM (granian stops its worker), SIGKILL if it overruns; the exit status."""
        return stop_process(self.process, STOP_TIMEOUT_S, "floor server")


def start_floor(
    stack: str, exchanges: list[Exchange], threads: int, work: Path, timeout: float, cpu: int | None = None
) -> FloorServer:
    """A floor server of ``stack`` answering the exchanges' requests with our server's bytes;
    returned once it answers every one of them so (RuntimeError if it answers otherwise).
    ``cpu``: every process and thread of the floor pinned to it, as a pinned server's worker."""
    mine = [e for e in exchanges if (e.api == "grpc") == (stack == GRPC)]
    routes: Routes = {e.route: e.reply for e in mine}
    routes_file = work / f"floor-{stack}-routes.json"
    write_routes(routes_file, routes)
    port = free_port()
    command = [
        sys.executable, "-m", "loadtest.perf.floor_server", stack, "--port", str(port),
        "--routes", str(routes_file), "--threads", str(threads),
    ]  # fmt: skip
    log_path = work / f"floor-{stack}.log"
    with open(log_path, "wb") as log_file:  # the child keeps its own handle
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=pinned_to(cpu),
        )
    floor = FloorServer(stack, process, port, log_path)
    try:
        _wait_answering(floor, mine, timeout)
    except BaseException:
        floor.stop()
        raise
    return floor


def _wait_answering(floor: FloorServer, exchanges: list[Exchange], timeout: float) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if floor.process.poll() is not None:
            raise RuntimeError(
                f"the {floor.stack} floor server exited with status {floor.process.returncode}; "
                f"its log {floor.log_path}:\n{floor.log_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            check_answers(floor, exchanges, timeout)
            return
        except (OSError, grpc.RpcError) as exc:
            if not _not_listening_yet(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _not_listening_yet(exc: Exception) -> bool:
    """Whether a failed request says that the server is not up yet (not that it answered wrong)."""
    if isinstance(exc, grpc.RpcError):
        return exc.code() == grpc.StatusCode.UNAVAILABLE
    return not isinstance(exc, urllib.error.HTTPError)


def check_answers(floor: FloorServer, exchanges: list[Exchange], timeout: float) -> None:
    """Every exchange's request, answered by ``floor`` with our server's very reply."""
    for e in exchanges:
        where = floor.grpc_target if e.api == "grpc" else floor.rest_url
        got = ask(e.api, where, e.path, e.body, dict(e.headers), timeout)
        if got != e.reply:
            raise RuntimeError(
                f"the {floor.stack} floor answered {e.path} ({len(e.body)} bytes) with "
                f"{len(got.body)} bytes of {got.content_type}, not our server's "
                f"{len(e.reply.body)} bytes of {e.reply.content_type}"
            )
