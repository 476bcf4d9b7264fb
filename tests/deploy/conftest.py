"""What the images install, built once per session without Docker.

- ``build_context``: a copy of the files ``docker build .`` sends (.dockerignore applied);
- ``wheel``: the project's wheel built from that context (what ``pip install '.[extra]'`` in each
  Dockerfile installs), with this venv's setuptools, offline;
- ``installed_tree``: that wheel's files installed alone (``pip install --no-deps --target``): the
  project's code as an image's venv holds it, importable with PYTHONPATH (its dependencies come
  from this venv).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import build_context as copy_build_context
from deploy_support import build_wheel, install_tree


@pytest.fixture(scope="session")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_build_context(tmp_path_factory.mktemp("context"))


@pytest.fixture(scope="session")
def wheel(build_context: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(build_context, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def installed_tree(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_tree(wheel, tmp_path_factory.mktemp("site-packages"))
