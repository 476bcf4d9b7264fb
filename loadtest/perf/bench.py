"""``python -m loadtest perf``: the serving targets measured with C load generators.

The Locust benchmark (:mod:`loadtest.locust_bench.bench`) generates its load in Python, on the
cores the server needs; this mode drives the server with wrk (REST) and h2load (gRPC) instead
(:mod:`loadtest.perf.generators`) and measures requests/s, p50/p99 latency, and the server's
CPU per request (user+sys of its whole process
tree, read before and after each window, divided by the predict answers its own counters saw in
that window), per scenario (:class:`loadtest.perf.report.Scenario`: a wire path, connections,
images per request). The paths: TF Serving's REST ``:predict`` and gRPC ``Predict``, and the
Open Inference Protocol's REST ``/infer`` with binary tensors (``v2-rest``) or JSON tensors
(``v2-json``) and gRPC ``ModelInfer`` with ``raw_input_contents`` (``v2-grpc``), each body as
the client library encodes it.

It starts our server over a model repository (``loadtest.server.start_server``, as the Locust mode
does) and, for honest ratios, a baseline server in the same run: another git revision of this
checkout (``--baseline-rev``, exported with ``git archive``), another source tree
(``--baseline-source``), or the same code with other flags (``--baseline-server-args``). Rounds
interleave: each round runs every scenario on both servers, the order alternating from round to
round, so drift in the machine's load falls on both. Without a second server,
``--baseline-json`` compares with an earlier run's ``perf.json`` (not interleaved: less honest).

The floors, in the same run (:mod:`loadtest.perf.floors`; ``--no-floors`` skips them): ONNX
Runtime alone on the served model, before and after the rounds, and empty handlers on the same
transport stacks answering our server's own reply bytes, whose rounds run in the same round
loop. Reported: medians per scenario and server, the per-round ratios new/baseline, every
scenario as multiples of its floors, and the targets, set in those multiples, met or not
(:mod:`loadtest.perf.multiples`).

Nothing fails silently: every window's answers are checked against the server's own counters
(``serving_requests_total``: a gRPC error is an HTTP 200 that h2load counts as a success), and a
real REST and gRPC predict is checked on every server before and after the rounds; a round (or
warm-up) that got no answer at all stops the run (:class:`loadtest.checks.NoRequests`, exit 6).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import contract
from client import v2_grpc_client, v2_rest_client
from client.api import TFSERVING, ModelSpec, connect
from client.cli import EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE
from client.grpc_client import predict_request
from client.rest_client import model_path, predict_body
from contract import v2
from contract.mnist import load_split, to_model_input
from loadtest.checks import NoRequests, add_common_arguments
from loadtest.paths import BY_KEY
from loadtest.perf import generators as gen
from loadtest.perf import multiples
from loadtest.perf.floors import (
    FloorServer,
    capture,
    floor_cpu,
    floor_threads,
    measure_ort,
    rest_interface,
    served_model_file,
    start_floor,
    url_path,
)
from loadtest.perf.multiples import (
    ORT_LARGE_BATCH,
    STACKS,
    WSGI,
    Floors,
    OrtFloor,
    floor_label,
    floor_measures,
    floor_stacks,
    is_floor,
)
from loadtest.perf.report import BASELINE, NEW, Round, Scenario, markdown, parse_scenarios
from loadtest.server import StartedServer, cpu_seconds, start_server

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCENARIOS = "rest-c1,rest-c16,grpc-c1,grpc-c16,grpc-b64-c1"
# The four paths of the Open Inference Protocol issue, side by side (docs/performance.md).
PATHS_SCENARIOS = ",".join(f"{key}-c{n}" for key in BY_KEY for n in (1, 16))
PREDICT_METHODS = ("predict", "infer")  # the servers' method labels of an inference request
_COUNTER = re.compile(r"^serving_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)", re.M)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    models = parser.add_argument_group("the model (a repository, or a config file of several)")
    served = models.add_mutually_exclusive_group(required=True)
    served.add_argument("--model-base-path", metavar="DIR", help="the model repository both servers serve")
    served.add_argument(
        "--model-config-file",
        metavar="FILE",
        help="both servers serve the models of this file (TF Serving's ModelServerConfig text format)",
    )
    models.add_argument(
        "--model-name", default=contract.MODEL_NAME, help="the model measured (default %(default)s)"
    )
    parser.add_argument(
        "--server-args",
        default="",
        metavar="FLAGS",
        help='flags of the server under test, e.g. "--access_log false"',
    )
    parser.add_argument(
        "--source",
        metavar="DIR",
        help="run the server under test from this source tree instead of this checkout",
    )
    base = parser.add_argument_group("the baseline (optional; its rounds interleave with the new server's)")
    base.add_argument(
        "--baseline-rev",
        metavar="REV",
        help="a second server from this git revision of the checkout, e.g. HEAD",
    )
    base.add_argument(
        "--baseline-source", metavar="DIR", help="a second server from this source tree (e.g. a git worktree)"
    )
    base.add_argument(
        "--baseline-server-args",
        metavar="FLAGS",
        help="the baseline server's flags (default: --server-args); alone: the same code with these flags",
    )
    base.add_argument(
        "--baseline-model-name",
        metavar="NAME",
        help="the model the baseline rounds address (default --model-name); alone: the same code "
        "and flags serving the same models, so two models are measured side by side",
    )
    base.add_argument(
        "--baseline-json",
        metavar="FILE",
        help="no second server: compare with an earlier run's perf.json (not interleaved)",
    )
    load = parser.add_argument_group("the load")
    load.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help=f"comma-separated {'|'.join(BY_KEY)}[-bIMAGES]-cCONNECTIONS (default {DEFAULT_SCENARIOS}); "
        f"`paths`: every wire path at 1 and 16 connections ({PATHS_SCENARIOS})",
    )
    load.add_argument("--rounds", type=int, default=3, help="rounds per scenario and server (default 3)")
    load.add_argument("--duration", type=int, default=5, help="seconds per round (default 5)")
    load.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="seconds of each scenario on each server before the rounds (default 1; 0: none)",
    )
    load.add_argument(
        "--no-floors",
        action="store_true",
        help="skip the floors (ONNX Runtime alone, empty handlers on the same stacks) and the "
        "multiples of them: a quicker run",
    )
    add_common_arguments(load, parser, "reports/perf")


def check_arguments(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios to run; ValueError for a command line that cannot work."""
    scenarios = parse_scenarios(PATHS_SCENARIOS if args.scenarios == "paths" else args.scenarios)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        raise ValueError("--rounds and --duration must be >= 1, --warmup >= 0")
    if args.baseline_rev and args.baseline_source:
        raise ValueError("give --baseline-rev or --baseline-source, not both")
    second = (args.baseline_rev or args.baseline_source or args.baseline_server_args is not None
              or args.baseline_model_name)
    if args.baseline_json and second:
        raise ValueError("--baseline-json compares with an earlier run: no baseline server with it")
    return scenarios


@dataclass
class Inputs:
    """The request files of one batch size, and the digits a correct server answers."""

    files: dict[str, Path]  # path -> its wrk script (REST paths) or its gRPC frame (gRPC paths)
    images: np.ndarray
    requests: dict[str, tuple[bytes, dict[str, str]]]  # path -> its body (gRPC: message), headers


def _rest_file(out: Path, stem: str, body: bytes, headers: dict[str, str]) -> Path:
    """The body and the wrk script that POSTs it; the script's path."""
    (out / f"{stem}.body").write_bytes(body)
    script = out / f"{stem}.lua"
    script.write_text(gen.wrk_script((out / f"{stem}.body").resolve(), headers))
    return script


def prepare_inputs(sizes: set[int], mnist_dir: str | None, spec: ModelSpec, out: Path) -> dict[int, Inputs]:
    """Request files of the first MNIST test digits for every path, as the client library encodes them."""
    pixels = to_model_input(load_split("t10k", mnist_dir)[0][: max(sizes)])
    json_headers = {"Content-Type": "application/json"}
    inputs = {}
    for n in sorted(sizes):
        batch = pixels[:n]
        requests = {"rest": (predict_body(batch, spec), json_headers)}
        for path, tensor_format in (("v2-rest", v2_rest_client.BINARY), ("v2-json", v2_rest_client.JSON)):
            _, body, headers = v2_rest_client.infer_request(batch, spec, tensor_format=tensor_format)
            requests[path] = (body, headers)
        files = {path: _rest_file(out, f"{path}-b{n}", *request) for path, request in requests.items()}
        grpc_messages = {
            "grpc": predict_request(batch, spec),
            "v2-grpc": v2_grpc_client.infer_request(batch, spec),
        }
        for path, message in grpc_messages.items():
            requests[path] = (message.SerializeToString(), {})
            files[path] = out / f"{path}-b{n}.bin"
            files[path].write_bytes(gen.grpc_frame(requests[path][0]))
        inputs[n] = Inputs(files, batch, requests)
    return inputs


def request_counts(text: str) -> dict[tuple[str, str, str, str], float]:
    """``serving_requests_total`` of a Prometheus scrape: (api, protocol, method, code) -> count.

    A server without the ``protocol`` label (older revisions, TF Serving's API only) counts as
    ``tfserving``.
    """
    counts: dict[tuple[str, str, str, str], float] = {}
    for match in _COUNTER.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (
            labels.get("api", ""),
            labels.get("protocol", TFSERVING),
            labels.get("method", ""),
            labels.get("code", ""),
        )
        counts[key] = counts.get(key, 0.0) + float(match["value"])
    return counts


def scrape(rest_url: str) -> dict[tuple[str, str, str, str], float]:
    """The request counters of our server at ``rest_url`` (all its processes: one scrape)."""
    with urllib.request.urlopen(rest_url + contract.METRICS_PATH, timeout=30) as response:
        return request_counts(response.read().decode())


def served_delta(before: dict, after: dict, api: str, protocol: str = TFSERVING) -> tuple[int, int]:
    """(inference answers, of which not OK) of ``api`` (rest/grpc) and ``protocol``
    (tfserving/v2) between two scrapes."""
    keys = {k for k in (*before, *after) if k[:2] == (api, protocol) and k[2] in PREDICT_METHODS}
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}
    return round(sum(delta.values())), round(sum(v for k, v in delta.items() if k[3] != "OK"))


def model_of(label: str, args: argparse.Namespace) -> str:
    """The model a server's rounds address: ``--baseline-model-name`` for the baseline's."""
    if label == BASELINE and args.baseline_model_name:
        return args.baseline_model_name
    return args.model_name


def target_url(server: StartedServer | FloorServer, scenario: Scenario, model_name: str) -> str:
    """Where a scenario's requests go: the path's REST route or gRPC method on ``server`` (a
    floor serves the same routes)."""
    spec = ModelSpec(name=model_name)
    if scenario.protocol == "rest":
        return server.rest_url + model_path(spec) + ":predict"
    if scenario.api == "rest":
        return server.rest_url + v2.infer_path(model_name)
    method = contract.PREDICT_RPC if scenario.protocol == "grpc" else v2.MODEL_INFER_RPC
    return f"http://{server.grpc_target}{method}"


def run_round(
    server: StartedServer | FloorServer,
    label: str,
    scenario: Scenario,
    inputs: Inputs,
    args: argparse.Namespace,
    index: int,
    work: Path,
) -> Round:
    """One scenario on one server or floor for ``--duration`` seconds (``index`` < 0: a warm-up)."""
    duration = args.duration if index >= 0 else args.warmup
    log_file = work / f"h2load-{label}-{scenario.name}.log"
    log_file.unlink(missing_ok=True)  # never an earlier round's rows
    url = target_url(server, scenario, model_of(label, args))
    command = _generator_command(scenario, url, inputs.files[scenario.protocol], duration, log_file, args)
    counted = not is_floor(label)  # a floor keeps no counters: the generator's count divides
    before = scrape(server.rest_url) if counted else {}
    cpu_before = cpu_seconds(server.pid)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    cpu_s = cpu_seconds(server.pid) - cpu_before
    after = scrape(server.rest_url) if counted else {}
    result = _generator_result(scenario, command, done, log_file)
    if result.requests == 0:
        said = result.detail or done.stderr.strip()[-300:] or "no errors"
        cause = f"{command[0]} got no answer from {url} (it said: {said}); is the server up and answering?"
        raise NoRequests(f"{scenario.name} on the {label} server", duration, cause)
    served, server_errors = (
        served_delta(before, after, scenario.api, scenario.wire_protocol) if counted else (-1, -1)
    )
    return Round(label, scenario.name, index, scenario.images, result.requests, result.duration_s, result.rps,
                 result.p50_ms, result.p99_ms, result.max_ms, result.errors, served, server_errors, cpu_s,
                 os.getloadavg()[0], result.detail)  # fmt: skip


def _generator_command(
    scenario: Scenario, url: str, request: Path, duration: float, log_file: Path, args: argparse.Namespace
) -> list[str]:
    if scenario.api == "rest":
        return gen.wrk_command(url, scenario.connections, duration, request, args.timeout)
    return gen.h2load_command(url, scenario.connections, duration, request, log_file, args.timeout)


def _generator_result(
    scenario: Scenario, command: list[str], done: subprocess.CompletedProcess, log_file: Path
) -> gen.GeneratorResult:
    """What wrk or h2load said; RuntimeError when it failed or said something unexpected."""
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {done.returncode}: {done.stderr.strip()[-800:]}")
    try:
        if scenario.api == "rest":
            return gen.parse_wrk(done.stdout)
        return gen.parse_h2load(done.stdout, log_file.read_text() if log_file.exists() else "")
    except ValueError as exc:  # not a bad command line: the generator said something unexpected
        raise RuntimeError(str(exc)) from None


def verify(
    server: StartedServer, label: str, inputs: dict[int, Inputs], paths: set[str], args: argparse.Namespace
) -> None:
    """A real predict per batch size on every path measured: well-formed, and the same answer on
    each (bit-identical probabilities: one data plane behind every protocol)."""
    spec = ModelSpec(name=model_of(label, args))
    for n, item in inputs.items():
        answers = {}
        for key in sorted(paths | {"rest"}):
            path = BY_KEY[key]
            where = {"rest": server.rest_url} if path.transport == "rest" else {"grpc": server.grpc_target}
            with connect(
                **where, protocol=path.protocol, spec=spec, timeout=args.timeout, rest_format=path.rest_format
            ) as c:
                answers[key] = c.predict(item.images)
        reference = answers["rest"]
        for path, answer in answers.items():
            same = np.array_equal(answer.digits, reference.digits) and np.array_equal(
                answer.probabilities, reference.probabilities
            )
            if not same or len(answer) != n:
                raise RuntimeError(
                    f"{label} server: {path} answered {answer.digits.tolist()}, "
                    f"TF Serving REST {reference.digits.tolist()} (or other probabilities)"
                )


def export_revision(rev: str, destination: Path) -> str:
    """``git archive`` of ``rev`` of this checkout into ``destination``; its short hash."""
    sha = _git("rev-parse", "--short", rev)
    tree = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True, check=True
    ).stdout
    shutil.rmtree(destination, ignore_errors=True)  # no file of an earlier export stays
    destination.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
        archive.extractall(destination, filter="data")
    return sha


def _git(*argv: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def _tool_version(command: list[str]) -> str:
    """``wrk 4.1.0``: the tool and the first version number it prints."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return f"{command[0]} ?"
    found = re.search(r"\d+\.\d+(?:\.\d+)?", done.stdout + done.stderr)
    return f"{command[0]} {found[0] if found else '?'}"


def machine() -> str:
    model = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found[1].strip() if found else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def start_servers(args: argparse.Namespace, out: Path) -> list[tuple[str, StartedServer, str]]:
    """(label, server, what it runs): the new server, and the baseline one when asked for."""
    started = []
    source = Path(args.source).resolve() if args.source else None
    described = (
        f"source tree {args.source}"
        if source
        else f"this checkout ({_git('describe', '--always', '--dirty')})"
    )
    flags = f" with `{args.server_args}`" if args.server_args else ""
    server = start_server(
        args.model_base_path,
        args.model_name,
        out / "server-new.log",
        args.server_args,
        source=source,
        model_config_file=args.model_config_file,
    )
    started.append((NEW, server, described + flags))
    if (args.baseline_rev or args.baseline_source or args.baseline_server_args is not None
            or args.baseline_model_name):
        source, what = None, "the same code"
        if args.baseline_rev:
            source = out / "baseline-src"
            what = f"git {args.baseline_rev} ({export_revision(args.baseline_rev, source)})"
        elif args.baseline_source:
            source, what = Path(args.baseline_source).resolve(), f"source tree {args.baseline_source}"
        flags = baseline_flags(args)
        server = start_server(
            args.model_base_path,
            model_of(BASELINE, args),
            out / "server-baseline.log",
            flags,
            source=source,
            model_config_file=args.model_config_file,
        )
        model = f", model {args.baseline_model_name}" if args.baseline_model_name else ""
        started.append((BASELINE, server, what + (f" with `{flags}`" if flags else "") + model))
    return started  # fmt: skip


def run_perf(args: argparse.Namespace, argv: list[str]) -> int:
    """The benchmark; 0 when every window ran with zero errors (targets are reported, not enforced)."""
    scenarios = check_arguments(args)
    missing = gen.missing_tools()
    if missing:
        print(f"error: {', '.join(missing)} not found; {gen.INSTALL_HINT}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    model_file, no_floors = floors_model(args)
    inputs = {}  # per model addressed: the request bodies name it
    for name in {model_of(NEW, args), model_of(BASELINE, args)}:
        (out / "work" / name).mkdir(parents=True, exist_ok=True)
        inputs[name] = prepare_inputs(
            {s.images for s in scenarios}, args.mnist_dir, ModelSpec(name=name), out / "work" / name
        )
    load_start = os.getloadavg()
    print(f"perf: starting the server(s) over {_served(args)} ...", flush=True)
    servers = start_servers(args, out)
    floor_servers: list[FloorServer] = []
    floors = None
    try:
        replies = {} if model_file is None else start_floors(servers, scenarios, inputs, args, floor_servers)
        rounds, ort = measure(servers, floor_servers, scenarios, inputs, args, model_file)
        if ort is not None:
            floors = Floors(ort, rest_interfaces(args, servers), replies)
    finally:
        for floor in floor_servers:
            print(f"perf: stopping the {floor.label} server (exit status {floor.stop()})", flush=True)
        for label, server, _ in servers:
            print(f"perf: stopping the {label} server (exit status {server.stop()})", flush=True)
    baseline_text = next((what for label, _, what in servers if label == BASELINE), None)
    if args.baseline_json:
        rounds += load_baseline(Path(args.baseline_json))
        baseline_text = f"the new server of the earlier run {args.baseline_json} (not interleaved)"
    header = _header(args, argv, servers[0][2], baseline_text, load_start, no_floors)
    write_report(out, header, scenarios, rounds, floors, no_floors)
    errors = sum(r.errors for r in rounds if r.server != BASELINE or not args.baseline_json)
    if errors:
        print(f"error: the benchmark saw {errors} failed requests (see the errors column)", file=sys.stderr)
        return EXIT_UNHEALTHY
    return EXIT_OK


def floors_model(args: argparse.Namespace) -> tuple[Path | None, str]:
    """(the served model.onnx, "") when the floors are measured, else (None, why not)."""
    if args.no_floors:
        return None, "--no-floors"
    try:
        return served_model_file(args.model_base_path, args.model_config_file, args.model_name), ""
    except ValueError as exc:  # a repository this harness cannot read: the servers say more
        print(f"warning: the floors are not measured: {exc}", file=sys.stderr)
        return None, str(exc)


def baseline_flags(args: argparse.Namespace) -> str:
    """The baseline server's flags: ``--baseline-server-args``, else ``--server-args``."""
    return args.server_args if args.baseline_server_args is None else args.baseline_server_args


def rest_interfaces(
    args: argparse.Namespace, servers: list[tuple[str, StartedServer, str]]
) -> dict[str, str]:
    """The REST interface (rsgi / wsgi) of each server measured on the floors' model: the new one,
    and the baseline when it runs beside it on the same model."""
    found = {NEW: rest_interface(args.server_args)}
    if any(label == BASELINE for label, _, _ in servers) and not args.baseline_model_name:
        found[BASELINE] = rest_interface(baseline_flags(args))
    return found


def start_floors(
    servers: list[tuple[str, StartedServer, str]],
    scenarios: list[Scenario],
    inputs: dict[str, dict[int, Inputs]],
    args: argparse.Namespace,
    started: list[FloorServer],
) -> dict[str, int]:
    """The transport floors the scenarios need, started (into ``started``) and answering what the
    new server answers to each scenario's request; the size of each answer ("rest-b1": bytes)."""
    new = servers[0][1]
    exchanges = {}
    for s in scenarios:
        key = f"{s.protocol}-b{s.images}"
        if key not in exchanges:
            body, headers = inputs[args.model_name][s.images].requests[s.protocol]
            where = new.grpc_target if s.api == "grpc" else new.rest_url
            path = url_path(target_url(new, s, args.model_name))
            exchanges[key] = capture(s.api, where, path, body, headers, args.timeout)
    interfaces = rest_interfaces(args, servers)
    for stack in floor_stacks(scenarios, interfaces.values()):
        print(f"perf: starting the transport floor {floor_label(stack)} ({STACKS[stack]}) ...", flush=True)
        flags = args.server_args if stack != WSGI or interfaces[NEW] == WSGI else baseline_flags(args)
        started.append(
            start_floor(stack, list(exchanges.values()), floor_threads(stack, flags), Path(args.out) / "work",
                        args.timeout, floor_cpu(flags))
        )  # fmt: skip
    return {key: len(e.reply.body) for key, e in exchanges.items()}


def measure(
    servers: list[tuple[str, StartedServer, str]],
    floor_servers: list[FloorServer],
    scenarios: list[Scenario],
    inputs: dict[str, dict[int, Inputs]],
    args: argparse.Namespace,
    model_file: Path | None,
) -> tuple[list[Round], OrtFloor | None]:
    """Every server checked, warmed up, measured in interleaved rounds (with the transport floors),
    and checked again; the ONNX Runtime floor of ``model_file`` measured before and after the
    rounds, when no load runs. ``inputs``: per model, per batch size."""
    paths = {s.protocol for s in scenarios}
    for label, server, _ in servers:
        verify(server, label, inputs[model_of(label, args)], paths, args)
    players = [*servers, *((f.label, f, STACKS[f.stack]) for f in floor_servers)]
    if args.warmup:
        run_every(players, scenarios, inputs, args, -1)
    before = ort_floor(model_file, args)
    rounds = [r for index in range(args.rounds) for r in run_every(players, scenarios, inputs, args, index)]
    after = ort_floor(model_file, args)
    for label, server, _ in servers:
        verify(server, label, inputs[model_of(label, args)], paths, args)
    return rounds, (OrtFloor(str(model_file), before, after) if model_file else None)


def run_every(
    players: list[tuple[str, StartedServer | FloorServer, str]],
    scenarios: list[Scenario],
    inputs: dict[str, dict[int, Inputs]],
    args: argparse.Namespace,
    index: int,
) -> list[Round]:
    """Round ``index`` (< 0: the warm-up): every scenario on every server and floor that runs it,
    the order flipped every round so that drift in the machine's load falls on all."""
    order = players if index % 2 == 0 else players[::-1]
    rounds = []
    for scenario in scenarios:
        for label, server, _ in order:
            if floor_measures(label, scenario):
                model_inputs = inputs[model_of(label, args)][scenario.images]
                work = Path(args.out) / "work"
                rounds.append(run_round(server, label, scenario, model_inputs, args, index, work))
                if index >= 0:
                    _progress(rounds[-1], args.rounds)
    return rounds


def ort_floor(model_file: Path | None, args: argparse.Namespace) -> dict[str, float]:
    """ONNX Runtime alone on the served model, ``--duration`` seconds per batch size (none: {})."""
    if model_file is None:
        return {}
    print(f"perf: the ONNX Runtime floor of {model_file} ...", flush=True)
    digits = to_model_input(load_split("t10k", args.mnist_dir)[0][:ORT_LARGE_BATCH])
    return measure_ort(model_file, digits, args.duration, Path(args.out) / "work")


def write_report(
    out: Path,
    header: str,
    scenarios: list[Scenario],
    rounds: list[Round],
    floors: Floors | None,
    no_floors: str = "",
) -> None:
    """perf.md and perf.json under ``out`` (``no_floors``: why there are no floors); the markdown
    printed too."""
    report = markdown(header, scenarios, rounds) + multiples.markdown(scenarios, rounds, floors, no_floors)
    (out / "perf.md").write_text(report)
    record = {
        "header": header,
        "scenarios": [s.name for s in scenarios],
        "rounds": [r.as_dict() for r in rounds],
        "floors": floors.as_dict() if floors else {"not_measured": no_floors},
        "multiples": [m.as_dict() for m in multiples.multiples(rounds, scenarios, floors)] if floors else [],
        "targets": [
            {"target": text, "scenario": scenario, "measured": value, "met": met}
            for text, scenario, value, met in multiples.check_targets(scenarios, rounds, floors)
        ],
    }
    (out / "perf.json").write_text(json.dumps(record, indent=1, default=lambda x: None if x != x else x))
    print(report)
    print(f"report: {out / 'perf.md'}  {out / 'perf.json'}")


def _progress(r: Round, rounds: int) -> None:
    detail = f" ({r.detail})" if r.detail else ""
    print(
        f"perf: round {r.round + 1}/{rounds} {r.scenario} {r.server}: {r.rps:,.0f} req/s, "
        f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, CPU {r.cpu_us_per_request:.0f} µs/req, "
        f"errors {r.errors}{detail}",
        flush=True,
    )


def load_baseline(path: Path) -> list[Round]:
    """The new server's rounds of an earlier run, relabelled as the baseline."""
    record = json.loads(path.read_text())
    fields = Round.__dataclass_fields__
    rows = []
    for row in record["rounds"]:
        if row["server"] == NEW:
            values = {k: (math.nan if v is None else v) for k, v in row.items() if k in fields}
            rows.append(Round(**{**values, "server": BASELINE}))
    return rows


def _served(args: argparse.Namespace) -> str:
    """What the servers serve: the model repository or the models config file."""
    return args.model_base_path or f"the models of {args.model_config_file}"


def _floor_placement(args: argparse.Namespace) -> str:
    """How the floors were placed: pinned to a CPU when the new server pins its workers."""
    cpu = floor_cpu(args.server_args)
    return "" if cpu is None else f"; pinned to CPU {cpu}, as the new server's first worker (--cpu_affinity)"


def _header(
    args: argparse.Namespace,
    argv: list[str],
    new: str,
    baseline: str | None,
    load_start: tuple,
    no_floors: str = "",
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    start, end = ("/".join(f"{x:.1f}" for x in load) for load in (load_start, os.getloadavg()))
    lines = [
        f"### {now[:10]} perf: {args.scenarios}",
        "",
        f"- date: {now}; machine: {machine()}; load average (1/5/15 min) {start} at the start, "
        f"{end} at the end",
        f"- command: `python -m loadtest perf {shlex.join(argv)}`",
        f"- new: {new}; baseline: {baseline or 'none'}; model: {args.model_name} of {_served(args)}",
        f"- load: {_tool_version(['wrk', '--version'])} for REST (one thread; POST of TF Serving's "
        "row-format JSON to `:predict`, of a V2 JSON body (`v2-json`) or a V2 binary-extension body "
        f"(`v2-rest`) to `/v2/models/M/infer`), {_tool_version(['h2load', '--version'])} for gRPC "
        "(one thread, one stream per connection; `tensor_content` PredictRequest frames to "
        "`Predict`, `raw_input_contents` ModelInferRequest frames to `ModelInfer`); closed loop; "
        "the first MNIST test digits; "
        f"{args.rounds} rounds of {args.duration} s per scenario and server"
        + (", interleaved (the order alternating each round)" if baseline and not args.baseline_json else "")
        + "; medians. Server CPU = user+sys of the server's whole process tree per predict answer "
        "its own counters saw; errors = the generator's plus the server's non-OK answers.",
        f"- floors: none ({no_floors})" if no_floors else
        "- floors: ONNX Runtime alone on the served model.onnx (its own process, one intra-op and "
        f"one inter-op thread, {args.duration} s per batch size) before and after the rounds, the "
        "mean used; empty handlers answering our server's own reply bytes (granian RSGI / WSGI "
        "with one worker, grpcio in one process on raw bytes), driven by the same generator "
        "commands in the same rounds, CPU = their process tree's per answer the generator counted"
        + _floor_placement(args) + ".",
    ]  # fmt: skip
    return "\n".join(lines)
