"""The command line: classify digit images, ask a server for status and metadata.

Usage:
  python -m client predict photo.png scan.jpg --rest http://127.0.0.1:8501
  python -m client predict mnist:t10k:0-9 --grpc 127.0.0.1:8500 --json
  python -m client status --grpc 127.0.0.1:8500 [--model-version 2 | --model-label stable]
  python -m client metadata --rest http://127.0.0.1:8501
  python -m client predict mnist:t10k:0-9 --grpc 127.0.0.1:8500 --protocol v2
  python -m client predict photo.png --rest http://127.0.0.1:8501 --protocol v2 --rest-format json
  python -m client predict photo.png --rest http://127.0.0.1:8501 --model lenet5-ensemble

``--model`` names the model every subcommand addresses (a server may serve several; default
``lenet5``); ``--model-name`` is the same flag under its older name.

``--protocol tfserving`` (the default) speaks TensorFlow Serving's REST and gRPC APIs,
``--protocol v2`` the Open Inference Protocol (KServe V2, Triton, MLServer) on the same ports.

Errors are one line on stderr; the exit code says what kind (see ``EXIT_CODES``), so scripts can
tell a bad input from a refusing server from an absent one. The benchmark (``python -m loadtest``)
returns the same codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import contract
from client.api import DEFAULT_TIMEOUT_S, PROTOCOLS, TFSERVING, V2, DigitsClient, ModelSpec, connect
from client.images import InputImage, load_inputs
from client.rest_client import COLUMNAR_FORMAT, ROW_FORMAT
from client.v2_rest_client import TENSOR_FORMATS
from contract.errors import DigitsError, InputError, ServingError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: should never happen, still reported in one line
EXIT_USAGE = 2  # bad command line (argparse's own code)
EXIT_INPUT = 3  # an input file could not be read as a digit (the others were still classified)
EXIT_REJECTED = 4  # the server answered with an error (bad request, unknown model/version...)
EXIT_UNREACHABLE = 5  # no answer: connection refused, UNAVAILABLE, timed out
EXIT_UNHEALTHY = 6  # the call worked but the result is bad: model not AVAILABLE, bench failures
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug)",
    EXIT_USAGE: "bad command line",
    EXIT_INPUT: "an input could not be read as a digit image",
    EXIT_REJECTED: "the server refused the request (4xx / INVALID_ARGUMENT, NOT_FOUND...)",
    EXIT_UNREACHABLE: "the server could not be reached or timed out (retry may help)",
    EXIT_UNHEALTHY: "the model is not AVAILABLE, or the benchmark saw failures",
}


def _exit_code_for(error: ServingError) -> int:
    return EXIT_UNREACHABLE if error.unreachable else EXIT_REJECTED


_REST_FORMATS = {TFSERVING: (ROW_FORMAT, COLUMNAR_FORMAT), V2: TENSOR_FORMATS}


# --- argument parsing -----------------------------------------------------------------------------
def _add_server_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("server")
    one = where.add_mutually_exclusive_group(required=True)
    one.add_argument("--rest", metavar="URL", help=f"REST base URL, e.g. http://HOST:{contract.REST_PORT}")
    one.add_argument("--grpc", metavar="HOST:PORT", help=f"gRPC target, e.g. HOST:{contract.GRPC_PORT}")
    where.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=TFSERVING,
        help="tfserving: TF Serving's APIs (default); v2: the Open Inference Protocol (KServe, Triton)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        "--model-name",  # the older spelling, kept so scripts keep working
        dest="model_name",
        metavar="NAME",
        default=contract.MODEL_NAME,
        help="the model to address, as the server names it (default %(default)s)",
    )
    pick = model.add_mutually_exclusive_group()
    pick.add_argument("--model-version", type=int, metavar="N", help="a specific version")
    pick.add_argument("--model-label", metavar="LABEL", help="a version label (e.g. stable)")
    model.add_argument("--signature-name", default=contract.SIGNATURE_NAME)
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request (default %(default)g)"
    )


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description="Classify handwritten digits with a TF-Serving-compatible server.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="classify images, .npy arrays or MNIST digits",
        description="Classify digit images: PNG/JPEG/... of any size (dark ink on light paper or "
        "light on dark), .npy arrays, or mnist:SPLIT:INDEX[-LAST] from the MNIST IDX files.",
    )
    predict.add_argument("inputs", nargs="+", metavar="FILE", help="image, .npy or mnist:t10k:N")
    _add_server_args(predict)
    predict.set_defaults(func=cmd_predict)
    predict.add_argument("--json", action="store_true", help="one JSON document on stdout")
    predict.add_argument(
        "--mnist-dir",
        help=f"directory of the MNIST IDX files (default ${contract.MNIST_DIR_ENV} or "
        f"{contract.DEFAULT_MNIST_DIR})",
    )
    predict.add_argument(
        "--rest-format",
        choices=_REST_FORMATS[TFSERVING] + _REST_FORMATS[V2],
        help="REST body: row (instances, the default) or columnar (inputs) for tfserving; "
        "binary (the binary tensor extension, the default) or json for v2",
    )

    status = commands.add_parser("status", help="the model's version states")
    _add_server_args(status)
    status.set_defaults(func=cmd_status)
    status.add_argument("--json", action="store_true")

    metadata = commands.add_parser("metadata", help="the model's signature map")
    _add_server_args(metadata)
    metadata.set_defaults(func=cmd_metadata)
    metadata.add_argument("--json", action="store_true")
    return parser


def _spec(args: argparse.Namespace) -> ModelSpec:
    return ModelSpec(
        name=args.model_name,
        version=args.model_version,
        label=args.model_label,
        signature_name=args.signature_name,
    )


def _client(args: argparse.Namespace) -> DigitsClient:
    rest_format = getattr(args, "rest_format", None)
    if rest_format is not None and (args.grpc or rest_format not in _REST_FORMATS[args.protocol]):
        where = "gRPC" if args.grpc else f"--protocol {args.protocol}"
        raise ValueError(f"--rest-format {rest_format} is not for {where}")
    return connect(
        rest=args.rest,
        grpc=args.grpc,
        protocol=args.protocol,
        spec=_spec(args),
        timeout=args.timeout,
        rest_format=rest_format,
    )


def _path_name(args: argparse.Namespace) -> str:
    """``rest``/``grpc`` for TF Serving's APIs, ``v2-rest``/``v2-grpc`` for the V2 protocol."""
    transport = "rest" if args.rest else "grpc"
    return transport if args.protocol == TFSERVING else f"{args.protocol}-{transport}"


# --- commands ------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    inputs: list[InputImage] = []
    bad: list[InputError] = []
    for spec in args.inputs:
        try:
            inputs.extend(load_inputs(spec, mnist_directory=args.mnist_dir))
        except InputError as exc:
            bad.append(exc)
            print(f"error: {exc}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    version = None
    if inputs:
        with _client(args) as client:
            # Chunks within the server's batch limit; one request per chunk, not per file.
            step = contract.MAX_BATCH_SIZE
            for start in range(0, len(inputs), step):
                chunk = inputs[start : start + step]
                prediction = client.predict(np.stack([item.pixels for item in chunk]))
                version = prediction.model_version
                confidence = prediction.confidence()
                for k, item in enumerate(chunk):
                    results.append(
                        {
                            "input": item.source,
                            "digit": int(prediction.digits[k]),
                            "probability": float(confidence[k]),
                            "probabilities": [float(p) for p in prediction.probabilities[k]],
                            "label": item.label,
                        }
                    )
    if args.json:
        document = {
            "model": args.model_name,
            "version": version,
            "protocol": _path_name(args),
            "results": results,
            "errors": [{"input": e.source, "error": e.reason} for e in bad],
        }
        print(json.dumps(document, indent=2))
    else:
        width = max((len(r["input"]) for r in results), default=0)
        for r in results:
            label = "" if r["label"] is None else f"  label {r['label']}"
            mark = "" if r["label"] is None or r["label"] == r["digit"] else "  WRONG"
            print(f"{r['input']:<{width}}  digit {r['digit']}  p={r['probability']:.4f}{label}{mark}")
    return EXIT_INPUT if bad else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        versions = client.status()
    if args.json:
        print(json.dumps([v.__dict__ for v in versions], indent=2))
    else:
        for v in versions:
            error = "" if v.error_code == "OK" else f"  {v.error_code}: {v.error_message}"
            print(f"{args.model_name} version {v.version}: {v.state}{error}")
    return EXIT_OK if any(v.available for v in versions) else EXIT_UNHEALTHY


def cmd_metadata(args: argparse.Namespace) -> int:
    with _client(args) as client:
        meta = client.metadata()
    if args.json:
        print(json.dumps(meta.as_dict(), indent=2))
        return EXIT_OK
    print(f"model {meta.name} version {meta.version}")
    for key, sig in meta.signatures.items():
        print(f"signature {key} ({sig.method_name})")
        for kind, specs in (("input", sig.inputs), ("output", sig.outputs)):
            for name, spec in specs.items():
                shape = "?" if spec.shape is None else [-1 if s is None else s for s in spec.shape]
                print(f"  {kind:<6} {name}: {spec.dtype} {shape}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit_code_for(exc)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except ValueError as exc:  # a model spec or option refused before anything was sent
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DigitsError, OSError) as exc:  # OSError: e.g. a report directory not writable
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line for scripts, the traceback with -v
        log.debug("unexpected error", exc_info=True)
        print(f"error: internal: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
