"""The package's shape: one job per module, said in its docstring; imports at the top.

Size is not capped here: complexity is (ruff's C901 in ``make test``), and the layers between
the subpackages are import-linter contracts (pyproject.toml).

A module may import inside a function only on purpose (a process that must stay light), never
to dodge an import cycle: such an import carries a comment saying why it is not one. The data
plane speaks protocol-neutral types, so importing it loads no protobuf and no web framework.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "serving").rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_module_says_what_it_owns(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring.split()) >= 5, f"{_name(path)}: no docstring saying its job"


def _function_imports(tree: ast.Module) -> list[ast.stmt]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
    return found


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_imports_inside_functions_say_why_they_are_not_a_cycle_dodge(path: Path) -> None:
    lines = path.read_text().splitlines()
    for node in _function_imports(ast.parse("\n".join(lines))):
        # The comment sits on the lines just above the block of imports this one belongs to.
        above = node.lineno - 2
        while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
            above -= 1
        comment = []
        while above >= 0 and lines[above].strip().startswith("#"):
            comment.insert(0, lines[above].strip())
            above -= 1
        assert "not a cycle" in " ".join(comment), (
            f"{path.name}:{node.lineno}: import inside a function without a comment saying why "
            "it is deliberate (not a cycle dodge)"
        )


def test_the_layout_check_can_fail() -> None:
    tree = ast.parse("def f():\n    import json\n")
    assert len(_function_imports(tree)) == 1


def test_the_data_plane_loads_no_wire_format() -> None:
    code = (
        "import sys, serving.core.dataplane\n"
        "wire = sorted(m for m in sys.modules if m.split('.')[0] in {'google', 'grpc', 'flask', 'orjson'})\n"
        "print(wire)\n"
        "sys.exit(1 if wire else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_supervisor_stays_light() -> None:
    """The supervisor only starts processes and reads the model config file (protobuf's text
    format): no ONNX Runtime, grpcio, Flask or numpy in it."""
    code = (
        "import sys, serving.__main__\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
        "               & {'onnxruntime', 'grpc', 'flask', 'granian', 'numpy'})\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
