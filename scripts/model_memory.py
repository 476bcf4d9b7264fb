"""How much memory one more model costs each worker process: RSS and USS per worker, measured.

Usage: python scripts/model_memory.py --model-base-path pretrained/lenet5 [--models 8]

Starts the server (one REST and one gRPC worker) serving one model, then reloads its config
(``HandleReloadConfigRequest``, ``--model_control_mode explicit``) to serve ``--models`` names
over copies of the same repository, answering one request on each, and prints each worker's
RSS and USS (memory no other process shares) before and after, and the cost per added model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import psutil

from client.api import connect
from client.base import ModelSpec
from contract import INPUT_SHAPE, RELOAD_CONFIG_RPC, model_config
from contract.proto import digits_tfserving_pb2 as pb
from contract.types import ModelEntry
from loadtest.server import start_server

MIB = 1024 * 1024


def _workers(pid: int) -> dict[str, psutil.Process]:
    """The worker processes (the ones that load models) under the supervisor, by role."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        command = " ".join(child.cmdline())
        if "serving.process.workers grpc" in command:
            found["grpc"] = child
        elif "granian" in command or "serving.process.workers rest" in command:
            if child.children():  # granian's master; its child is the REST worker
                continue
            found["rest"] = child
    return found


def _memory(workers: dict[str, psutil.Process]) -> dict[str, tuple[float, float]]:
    return {role: (p.memory_full_info().rss / MIB, p.memory_full_info().uss / MIB)
            for role, p in workers.items()}


def _ask_each(server, names: list[str]) -> None:
    image = np.zeros((1, *INPUT_SHAPE), np.float32)
    for name in names:
        for kwargs in ({"rest": server.rest_url}, {"grpc": server.grpc_target}):
            with connect(spec=ModelSpec(name=name), **kwargs) as client:
                client.predict(image)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", type=Path, required=True)
    parser.add_argument("--models", type=int, default=8, help="models served after the reload")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names = [f"m{i}" for i in range(args.models)]
        for name in names:
            shutil.copytree(args.model_base_path, work / name)
        config = work / "models.config"
        config.write_text(model_config.to_text([ModelEntry(names[0], str(work / names[0]))]))
        server = start_server(None, names[0], work / "server.log", "--num_workers 1 "
                              "--model_control_mode explicit", model_config_file=config)
        try:
            _ask_each(server, names[:1])
            workers = _workers(server.process.pid)
            before = _memory(workers)
            request = pb.ReloadConfigRequest(config=model_config.to_proto(
                [ModelEntry(name, str(work / name)) for name in names]))
            with grpc.insecure_channel(server.grpc_target) as channel:
                reload = channel.unary_unary(
                    RELOAD_CONFIG_RPC, request_serializer=pb.ReloadConfigRequest.SerializeToString,
                    response_deserializer=pb.ReloadConfigResponse.FromString)
                reload(request, timeout=120)
            _ask_each(server, names)
            after = _memory(workers)
        finally:
            server.stop()
    added = args.models - 1
    print(f"{'worker':8} {'RSS 1 model':>12} {'RSS ' + str(args.models):>9} {'USS 1':>8} "
          f"{'USS ' + str(args.models):>8} {'per model (USS)':>16}")
    for role in sorted(before):
        (rss0, uss0), (rss1, uss1) = before[role], after[role]
        print(f"{role:8} {rss0:10.1f} M {rss1:7.1f} M {uss0:6.1f} M {uss1:6.1f} M "
              f"{(uss1 - uss0) / added:13.2f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
