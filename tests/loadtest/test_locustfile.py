"""The locustfile as ``locust -f`` loads it, and the users' digit pool, each in a fresh interpreter.

Fresh interpreters because the users module makes grpcio cooperate with gevent at import, which
must not happen inside the test process (other tests use grpcio there).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import contract

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locust_bench" / "locustfile.py"
NOT_ON_PATH = {ROOT, ROOT / "loadtest", LOCUSTFILE.parent}  # the project is installed, not on sys.path


def _run_python(code: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_locustfile_loads_as_locust_does_and_never_imports_tensorflow(tmp_path: Path) -> None:
    """Locust's own loader, from a directory outside the repository: the file finds ``loadtest``
    and ``client`` because the project is installed, not through path edits; the load-testing side
    brings Locust and gevent but never TensorFlow, the server or the training code."""
    _run_python(
        "import os, sys\n"
        "from locust import argument_parser\n"
        "from locust.util.load_locustfile import load_locustfile\n"
        "path_before = list(sys.path)\n"
        f"users, shapes = load_locustfile({str(LOCUSTFILE)!r})\n"
        "assert sorted(users) == ['GrpcDigitsUser', 'RestDigitsUser', 'V2GrpcDigitsUser',\n"
        "                         'V2JsonRestDigitsUser', 'V2RestDigitsUser'], users\n"
        "assert users['RestDigitsUser'].__module__ == 'loadtest.locust_bench.users'\n"
        "# Locust itself puts the working directory first; nothing else may change the path\n"
        "assert [p for p in sys.path if p != os.getcwd()] == path_before, 'sys.path changed'\n"
        f"assert not {{p.rstrip('/') for p in sys.path}} & set({sorted(map(str, NOT_ON_PATH))!r})\n"
        "parser = argument_parser.get_parser(default_config_files=[])\n"
        f"o = parser.parse_args(['-f', {str(LOCUSTFILE)!r}, '--images-per-request', '64',\n"
        "                        '--grpc-target', 'h:1', '--live-stats-file', 'x.json'])\n"
        "assert (o.images_per_request, o.grpc_target, o.live_stats_file) == (64, 'h:1', 'x.json'), o\n"
        "import loadtest.locust_bench.bench, loadtest.__main__\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'tf2onnx', "
        "'onnx', 'onnxruntime', 'training', 'serving'})\n"
        "assert not bad, bad\n"
        "assert 'locust' in sys.modules and 'gevent' in sys.modules\n",
        cwd=tmp_path,
    )


def test_digit_pool_encodes_batches_that_walk_the_sample(mnist_dir: Path, tmp_path: Path) -> None:
    _run_python(
        "import json, locust\n"
        "import numpy as np\n"
        "from client.api import ModelSpec\n"
        "from contract.mnist import load_split, to_model_input\n"
        "from loadtest.locust_bench.users import DigitPool\n"
        f"mnist = {str(mnist_dir)!r}\n"
        "pool = DigitPool(mnist, 10, ModelSpec(), images_per_request=4)\n"
        "assert [p.tolist() for p in pool.positions] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]\n"
        "assert [pool.next_request() for _ in range(4)] == [0, 1, 2, 0]  # cycles through the sample\n"
        "images, labels = load_split('t10k', mnist)\n"
        "assert pool.labels == labels[pool.indices].tolist()\n"
        "sent = np.asarray(json.loads(pool.rest_bodies[2])['instances'], dtype=np.float32)\n"
        f"assert sent.shape == (4, {', '.join(map(str, contract.INPUT_SHAPE))}), sent.shape\n"
        "expected = to_model_input(images[pool.indices[[8, 9, 0, 1]]])\n"
        "np.testing.assert_allclose(sent, expected, atol=1e-6)\n"
        "tensor = pool.grpc_requests[2].inputs['image']\n"
        "assert [d.size for d in tensor.tensor_shape.dim] == [4, 28, 28, 1]\n"
        "assert pool.rest_path == '/v1/models/lenet5:predict'\n"
        "# the V2 paths: the same digits, encoded only when asked for\n"
        "assert sorted(pool._encoded) == ['REST', 'gRPC']\n"
        "body, headers = pool.encoded('V2 REST')[2]\n"
        "size = int(headers['Inference-Header-Content-Length'])\n"
        "np.testing.assert_array_equal(np.frombuffer(body[size:], '<f4').reshape(expected.shape), expected)\n"
        "body, headers = pool.encoded('V2 REST JSON')[2]\n"
        "data = json.loads(body)['inputs'][0]['data']\n"
        "np.testing.assert_array_equal(np.asarray(data, np.float32).reshape(expected.shape), expected)\n"
        "message = pool.encoded('V2 gRPC')[2]\n"
        "assert list(message.inputs[0].shape) == [4, 28, 28, 1] and message.model_name == 'lenet5'\n"
        "assert pool.v2_path == '/v2/models/lenet5/infer'\n"
        "single = DigitPool(mnist, 10, ModelSpec(), images_per_request=1)\n"
        "assert [p.tolist() for p in single.positions] == [[k] for k in range(10)]\n"
        "assert single.indices.tolist() == pool.indices.tolist()  # the same fixed sample\n"
        "for bad in (0, 1025):\n"
        "    try:\n"
        "        DigitPool(mnist, 10, ModelSpec(), images_per_request=bad)\n"
        "    except ValueError:\n"
        "        continue\n"
        "    raise AssertionError(f'{bad} images per request accepted')\n",
        cwd=tmp_path,
    )


def test_users_spread_their_requests_over_the_models_round_robin(mnist_dir: Path, tmp_path: Path) -> None:
    _run_python(
        "from types import SimpleNamespace\n"
        "from loadtest.locust_bench.users import DigitPool, _DigitsUserMixin\n"
        "options = SimpleNamespace(model_name='lenet5, lenet5-ensemble', mnist_sample=10,\n"
        f"                          images_per_request=1, mnist_dir={str(mnist_dir)!r})\n"
        "environment = SimpleNamespace(parsed_options=options)\n"
        "user = _DigitsUserMixin()\n"
        "user.environment = environment\n"
        "sent = []\n"
        "for _ in range(5):\n"
        "    request = user._next()\n"
        "    sent.append((user.model, request, user.pool.v2_path))\n"
        "assert sent == [('lenet5', 0, '/v2/models/lenet5/infer'),\n"
        "                ('lenet5-ensemble', 0, '/v2/models/lenet5-ensemble/infer'),\n"
        "                ('lenet5', 1, '/v2/models/lenet5/infer'),\n"
        "                ('lenet5-ensemble', 1, '/v2/models/lenet5-ensemble/infer'),\n"
        "                ('lenet5', 2, '/v2/models/lenet5/infer')], sent\n"
        "lenet5, ensemble = DigitPool.for_models(environment)\n"
        "assert ensemble.grpc_requests[0].model_spec.name == 'lenet5-ensemble'\n"
        "assert ensemble.rest_path == '/v1/models/lenet5-ensemble:predict'\n"
        "assert ensemble.indices.tolist() == lenet5.indices.tolist()  # the same sample for each\n"
        "assert DigitPool.get(environment) is lenet5  # the first model by default\n",
        cwd=tmp_path,
    )
