"""The C load generators of ``python -m loadtest perf``: wrk (REST) and h2load (gRPC frames).

Both are closed-loop: ``connections`` requests in flight, each connection sending its next request
when the previous answer arrived; one generator thread, so the generator takes as little of a
shared machine's cores as it can. This module builds their command lines and inputs and reads
their output; :mod:`loadtest.perf.bench` runs them.

- wrk POSTs one prepared body (a Lua script reads it from a file: TF Serving's JSON, or a V2
  JSON or binary-extension body with its headers); the script's ``done``
  hook prints one ``PERF_JSON {...}`` line with the latency percentiles in microseconds and
  wrk's error counts, and wrk's own text (``--latency``) is read too (a fallback, and the
  ``Non-2xx or 3xx responses`` line, which the hook cannot see).
- h2load sends a gRPC frame over h2c with prior knowledge: the body file is the frame itself
  (1 byte flag 0, 4-byte big-endian length, a serialized ``PredictRequest`` or V2
  ``ModelInferRequest``), with the headers
  ``content-type: application/grpc`` and ``te: trailers``. h2load counts HTTP statuses only, and
  gRPC errors come as HTTP 200 with a non-zero ``grpc-status`` trailer, so the benchmark also
  checks the server's own request counters and makes a real gRPC call. Its latency percentiles
  come from ``--log-file`` (one row per request: start µs, HTTP status, duration µs).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INSTALL_HINT = (
    "the perf benchmark needs wrk (REST) and h2load (gRPC): on Debian/Ubuntu "
    "`apt-get install -y wrk nghttp2-client`; on macOS `brew install wrk nghttp2`"
)
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def missing_tools() -> list[str]:
    """The generators not on PATH (empty when the benchmark can run)."""
    return [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]


@dataclass
class GeneratorResult:
    """What one generator run reports (latencies in ms; NaN when it did not say)."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors, timeouts, non-2xx answers: anything that was not a 2xx answer
    detail: str = ""  # what the errors were, in the generator's words


# --- gRPC frames -------------------------------------------------------------------------------
def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message frame: flag 0, big-endian length, the message."""
    return struct.pack(">BI", 0, len(message)) + message


def parse_grpc_frame(frame: bytes) -> bytes:
    """The message inside one whole frame (checks flag and length; the inverse of grpc_frame)."""
    if len(frame) < 5:
        raise ValueError(f"a gRPC frame has a 5-byte prefix; got {len(frame)} bytes")
    flag, length = struct.unpack(">BI", frame[:5])
    if flag != 0 or length != len(frame) - 5:
        raise ValueError(f"not one uncompressed frame (flag {flag}, length {length} of {len(frame) - 5})")
    return frame[5:]


# --- wrk ---------------------------------------------------------------------------------------
WRK_SCRIPT = """\
-- Written by python -m loadtest perf: POST one prepared body, report percentiles as JSON.
local f = assert(io.open(%(body_path)s, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
%(headers)s

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'PERF_JSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(body_path: Path, headers: dict[str, str] | None = None) -> str:
    """The Lua script that makes wrk POST the body in ``body_path`` with ``headers``
    (default: a JSON content type; a V2 binary body also needs its header length)."""
    headers = {"Content-Type": "application/json"} if headers is None else headers
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    return WRK_SCRIPT % {"body_path": json.dumps(str(body_path)), "headers": lines}


def wrk_command(
    url: str, connections: int, duration_s: float, script: Path, timeout_s: float = 10
) -> list[str]:
    """wrk with one thread, ``connections`` connections, the latency distribution printed."""
    return [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", f"--timeout={timeout_s:g}s",
        "--latency", "-s", str(script), url,
    ]  # fmt: skip


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_WRK_TIME = r"([\d.]+)(us|ms|s|m|h)"


def _wrk_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(text: str) -> GeneratorResult:
    """wrk's output: the ``PERF_JSON`` line of our script when present, else wrk's own text."""
    requests = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    if requests is None:
        raise ValueError(f"not wrk output (no 'N requests in T' line):\n{text[-1000:]}")
    count, duration_s = int(requests[1]), _wrk_ms(requests[2], requests[3]) / 1e3
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    percentiles = {
        int(m[1]): _wrk_ms(m[2], m[3])
        for m in re.finditer(r"^\s*(\d+)%\s+" + _WRK_TIME + r"\s*$", text, re.M)
    }
    p50, p99 = percentiles.get(50, math.nan), percentiles.get(99, math.nan)
    latency = re.search(r"^\s*Latency\s+" + _WRK_TIME + r"\s+" + _WRK_TIME + r"\s+" + _WRK_TIME, text, re.M)
    max_ms = _wrk_ms(latency[5], latency[6]) if latency else math.nan
    problems = []
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket:
        problems += [
            f"{kind} {n}"
            for kind, n in zip(("connect", "read", "write", "timeout"), socket.groups(), strict=True)
            if int(n)
        ]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        problems.append(f"non-2xx/3xx {non2xx[1]}")
    perf = re.search(r"^PERF_JSON (\{.*\})\s*$", text, re.M)
    if perf:
        hook = json.loads(perf[1])
        count, duration_s = int(hook["requests"]), hook["duration_us"] / 1e6
        p50, p99, max_ms = hook["p50_us"] / 1e3, hook["p99_us"] / 1e3, hook["max_us"] / 1e3
        if not socket:  # the hook counts the same socket errors; wrk prints them only when > 0
            problems += [f"{k} {hook[k]}" for k in ("connect", "read", "write", "timeout") if hook[k]]
        if not non2xx and hook["status"]:
            problems.append(f"non-2xx/3xx {hook['status']}")
    errors = sum(int(p.rsplit(" ", 1)[1]) for p in problems)
    rps = float(rate[1]) if rate else (count / duration_s if duration_s else math.nan)
    return GeneratorResult(count, duration_s, rps, p50, p99, max_ms, errors, ", ".join(problems))


# --- h2load ------------------------------------------------------------------------------------
def h2load_command(
    url: str, connections: int, duration_s: float, body: Path, log_file: Path, timeout_s: float = 10
) -> list[str]:
    """h2load: one thread, ``connections`` h2c connections with one stream each, for a duration."""
    command = [
        "h2load", "-t1", f"-c{connections}", "-m1", f"-D{max(1, round(duration_s))}",
        f"-T{timeout_s:g}", "-d", str(body), f"--log-file={log_file}",
    ]  # fmt: skip
    for header in GRPC_HEADERS:
        command += ["-H", header]
    return command + [url]


def parse_h2load(text: str, log_text: str = "") -> GeneratorResult:
    """h2load's summary; latency percentiles from its ``--log-file`` rows when given."""
    finished = re.search(r"^finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", text, re.M)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
        re.M,
    )
    statuses = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if not (finished and counts and statuses):
        raise ValueError(f"not h2load output (no finished/requests/status codes lines):\n{text[-1000:]}")
    duration_s = _wrk_ms(finished[1], finished[2]) / 1e3
    done, failed, errored, timeout = (int(counts[i]) for i in (3, 5, 6, 7))
    redirects, client_errors, server_errors = (int(statuses[i]) for i in (2, 3, 4))
    problems = [
        f"{name} {n}"
        for name, n in (
            ("failed", failed), ("errored", errored), ("timeout", timeout),
            ("3xx", redirects), ("4xx", client_errors), ("5xx", server_errors),
        )
        if n
    ]  # fmt: skip
    p50 = p99 = max_ms = math.nan
    rows = [line.split("\t") for line in log_text.splitlines() if line.strip()]
    durations = np.array([float(row[2]) for row in rows if len(row) >= 3], dtype=np.float64) / 1e3
    if durations.size:
        p50, p99 = (float(x) for x in np.percentile(durations, [50, 99]))
        max_ms = float(durations.max())
    else:
        mean_max = re.search(r"^time for request:\s+" + _WRK_TIME + r"\s+" + _WRK_TIME, text, re.M)
        max_ms = _wrk_ms(mean_max[3], mean_max[4]) if mean_max else math.nan
    # h2load's "failed" includes errored and timed-out requests and 4xx/5xx answers; it counts
    # 3xx as success, which a gRPC server never sends.
    errors = failed + redirects
    return GeneratorResult(
        done, duration_s, float(finished[3]), p50, p99, max_ms, errors, ", ".join(problems)
    )
