"""``python -m loadtest`` / ``digits-loadtest``: the Locust benchmark; ``perf``: the wrk/h2load one;
``chaos``: the fault-injection soak.

Usage:
  # the serving targets with wrk and h2load, interleaved with a baseline revision (see loadtest.perf.bench)
  python -m loadtest perf --model-base-path models/lenet5 --server-args "--access_log false" \\
      --baseline-rev HEAD --rounds 3 --duration 5 --out reports/perf
  # Locust: against a running server (its pid, for the server's CPU per request)
  python -m loadtest --rest http://127.0.0.1:8501 --grpc 127.0.0.1:8500 --server-pid PID \\
      --users 1,4,16 --duration 10 --out reports/bench
  # or start our server over a model repository, measure it, stop it
  python -m loadtest --model-base-path models/lenet5 --server-args "--access_log false"
  # the four wire paths side by side: TF Serving REST/gRPC, V2 REST (binary, JSON), V2 gRPC
  python -m loadtest perf --model-base-path models/lenet5 --scenarios paths --rounds 5
  python -m loadtest --model-base-path models/lenet5 --protocols rest,grpc,v2-rest,v2-json,v2-grpc
  # a fault-injection soak: five paths under killed workers, new and corrupt versions, abuse
  python -m loadtest chaos --model-base-path models/lenet5 --minutes 10 --seed 1
  # 64 digits per request, gRPC only
  python -m loadtest --model-base-path models/lenet5 --protocols grpc --users 1,4 \\
      --images-per-request 64 --out reports/bench-batch64

Exit codes are the client CLI's (``python -m client --help``): 0 every level ran with zero
failures, 6 the benchmark saw failures or a scenario answered no request, 5 the server could not
be reached, 2 a bad command line (an MNIST directory that cannot be read included: it is checked,
and made absolute, before any server or load starts).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from client.cli import (
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_REJECTED,
    EXIT_UNHEALTHY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from contract.errors import DigitsError, ServingError
from loadtest import checks
from loadtest.chaos import soak as chaos
from loadtest.locust_bench.bench import add_arguments, run_bench
from loadtest.perf import bench as perf
from loadtest.perf import generators

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Run Locust headless against a server over REST and gRPC at several "
        "concurrency levels; write a CSV + markdown report and a latency plot. "
        "(`python -m loadtest perf --help`: the serving targets measured with wrk and h2load.)",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser)
    return parser


def build_perf_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest perf",
        description="Measure the serving targets with C load generators (wrk for REST, h2load "
        "for gRPC) against our server started over a model repository, optionally interleaved "
        f"with a baseline server; write perf.md and perf.json. Note: {generators.INSTALL_HINT}.",
        epilog="exit codes: 0 no failed request (targets are reported, not enforced), "
        "6 failed requests or a round that answered none, 2 bad command line (an unreadable "
        "MNIST directory included) or a generator missing, 1 anything else",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    perf.add_arguments(parser)
    return parser


def build_chaos_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest chaos",
        description="A fault-injection soak: steady traffic on all five wire paths against our "
        "server while a seeded injector kills and stops workers, publishes good, corrupt and "
        "slowly-copied versions and sends half-sent, oversized and malformed requests; write "
        "chaos.md, chaos.json and chaos.png.",
        epilog="exit codes: 0 the soak passed (no wrong answer, failures only at kills, memory and "
        "descriptors flat), 6 it did not, 2 bad command line, 1 anything else",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    chaos.add_arguments(parser)
    return parser


def _mode(argv: list[str]) -> tuple[argparse.Namespace, Callable[[], int]]:
    """The parsed arguments of ``argv`` and the run they ask for (the Locust benchmark, or the
    ``perf`` or ``chaos`` mode)."""
    if argv[:1] == ["perf"]:
        args = build_perf_parser().parse_args(argv[1:])
        return args, lambda: perf.run_perf(args, argv[1:])
    if argv[:1] == ["chaos"]:
        args = build_chaos_parser().parse_args(argv[1:])
        return args, lambda: chaos.run_chaos(args)
    args = build_parser().parse_args(argv)
    return args, lambda: run_bench(args)


def main(argv: Sequence[str] | None = None) -> int:
    args, run = _mode(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # Every mode sends MNIST digits: the directory is checked, and made absolute, first.
        args.mnist_dir = checks.mnist_dir(args.mnist_dir)
        return run()
    except checks.NoRequests as exc:  # a scenario that answered nothing: no NaN row, exit 6
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REJECTED
    except ValueError as exc:  # an option refused before anything was sent
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DigitsError, OSError) as exc:  # OSError: e.g. a report directory not writable
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. a Locust run that wrote nothing: one line, its log named
        log.debug("unexpected error", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
