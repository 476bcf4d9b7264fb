"""Generate the Python code for contract/proto/*.proto beside them (the one way it is produced).

Usage: python scripts/gen_protos.py [--check] [--out-dir DIR]

--check regenerates into a temporary directory and exits 1 if anything differs from the
committed files (CI runs it through tests/client/test_protos.py).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "contract" / "proto"
OUT_DIR = PROTO_DIR
INIT = '"""Our .proto files and their generated code (python scripts/gen_protos.py). Do not edit."""\n'


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto of contract/proto/ into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_dir / "__init__.py").write_text(INIT)
    return sorted(p for p in out_dir.iterdir() if p.suffix in {".py", ".pyi"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR,
                        help="where the generated code lives (default: contract/proto)")
    args = parser.parse_args()
    out_dir = args.out_dir.resolve()
    if not args.check:
        for path in generate(out_dir):
            print(path)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            p.name for p in fresh
            if not (out_dir / p.name).exists() or not filecmp.cmp(p, out_dir / p.name, shallow=False)
        ]
    if stale:
        print(f"generated code is stale, run scripts/gen_protos.py: {stale}", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
