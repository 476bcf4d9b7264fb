"""Build the three images and smoke-test them, without Docker: podman and buildah, chroot isolation.

Usage:
    python scripts/images.py build [--train-variants gpu,cpu]   # `make images`
    python scripts/images.py smoke                               # `make images-smoke` (after build)
    python scripts/images.py lock-gpu                            # rewrite requirements/lock-gpu.txt

`build` makes digits-train (the GPU variant, and its CPU variant tagged ...-cpu), digits-serve and
digits-loadtest from Dockerfile.*, each tagged VERSION-gREVISION (pyproject's version, the git
commit, `-dirty` when the build context differs from it), VERSION (what the kustomize overlays
name) and `latest` (`-cpu` after each for the CPU variant), with the OCI labels
version/revision/created. Their base is python:3.11-slim when the machine has it or can pull
it; otherwise a stand-in built once with mmdebstrap (Debian bookworm's Python 3.11 with venv, the
same major.minor) and imported as localhost/python:3.11-slim. The Dockerfiles take either through
their PYTHON_IMAGE build argument.

Why this shape, found on our machines (as root, no registry reachable, PyPI through a
TLS-intercepting proxy): the default OCI runtimes cannot start containers here (crun refuses
hybrid cgroups; crun and runc are refused setrlimit), so builds and runs use chroot isolation
(`podman build --isolation chroot`, `buildah run --isolation chroot`); pip inside a build trusts the
proxy's CA only through the host's bundle, so a build mounts the host's /etc/ssl/certs read-only
over the image's, where the Dockerfiles' PIP_CERT build argument points pip (a build-time mount and
an ARG: nothing of either lands in an image; `--env PIP_CERT` would, into its configuration).

`smoke` is scripts/images_smoke.py: the serve image run as the Kubernetes Deployment runs it, as far
as chroot isolation allows, the training image's short run and export, the export served, and a
short load test from the load-test image. Summaries go to build/images/*.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from image_store import OUT, ROOT, TRAIN_VARIANTS, image_exists, image_size, log, run

REGISTRY_BASE = "docker.io/library/python:3.11-slim"
STAND_IN_BASE = "localhost/python:3.11-slim"
STAND_IN_LABEL = "digits.stand-in"  # marks the mmdebstrap base, so it is found and reused
STAND_IN_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Image name -> Dockerfile (the training image's variants and tag suffixes: image_store.TRAIN_VARIANTS).
DOCKERFILES = {"digits-train": "Dockerfile.train", "digits-serve": "Dockerfile.serve",
               "digits-loadtest": "Dockerfile.loadtest"}
BUILD_TIMEOUT_S = 3600
GPU_BUILD_BYTES = 15e9  # free disk the GPU image's build needs: the image and its layers in flight
GPU_LOCK = ROOT / "requirements" / "lock-gpu.txt"
GPU_REQUIREMENTS = ROOT / "requirements" / "train-gpu.txt"


# --- Names: version, revision, tags --------------------------------------------------------------
def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def context_paths() -> list[str]:
    """What the images are built from: the Dockerfiles and .dockerignore's allowlist (its `!` lines)."""
    kept = [line[1:].strip().strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.startswith("!")]
    return [*DOCKERFILES.values(), ".dockerignore", *kept]


def revision() -> tuple[str, bool]:
    """(the commit, whether the build context differs from it: changed or untracked files)."""
    commit = run("git", "-C", str(ROOT), "rev-parse", "HEAD").stdout.strip()
    paths = ["--", *context_paths()]
    changed = run("git", "-C", str(ROOT), "diff", "--quiet", "HEAD", *paths, check=False).returncode != 0
    untracked = run("git", "-C", str(ROOT), "ls-files", "--others", "--exclude-standard", *paths).stdout
    return commit, changed or bool(untracked.strip())


@dataclass(frozen=True)
class Image:
    name: str  # digits-serve
    dockerfile: str
    variant: str = ""  # the training image's DEVICE: gpu or cpu
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        return TRAIN_VARIANTS[self.variant] if self.variant else ""

    def tag(self, version_tag: str) -> str:
        return f"{self.name}:{version_tag}{self.suffix}"

    def aliases(self) -> list[str]:
        """The moving tags: the version alone (what the kustomize overlays name) and latest."""
        return [f"{self.name}:{project_version()}{self.suffix}", f"{self.name}:latest{self.suffix}"]


def version_tag() -> str:
    """VERSION-gREV12[-dirty]: what `make images` tags and `make images-smoke` runs."""
    commit, dirty = revision()
    return f"{project_version()}-g{commit[:12]}" + ("-dirty" if dirty else "")


def images(train_variants: list[str]) -> list[Image]:
    out = [Image("digits-train", DOCKERFILES["digits-train"], variant, {"DEVICE": variant})
           for variant in train_variants]
    return out + [Image(name, DOCKERFILES[name]) for name in ("digits-serve", "digits-loadtest")]


# --- The base: python:3.11-slim, or its stand-in ------------------------------------------------------
def require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: as root, apt-get install -y {' '.join(missing)}")


def base_image() -> tuple[str, str]:
    """(the image the Dockerfiles start FROM, where it came from)."""
    if image_exists(REGISTRY_BASE):
        return REGISTRY_BASE, "registry (already pulled)"
    pulled = run("podman", "pull", "--quiet", REGISTRY_BASE, timeout=300, check=False)
    if pulled.returncode == 0:
        return REGISTRY_BASE, "registry (pulled now)"
    log(f"{REGISTRY_BASE} cannot be pulled ({pulled.stderr.strip().splitlines()[-1][:160]})")
    labels = run("podman", "image", "inspect", "--format", "{{json .Labels}}", STAND_IN_BASE,
                 check=False)
    if labels.returncode == 0 and STAND_IN_LABEL in (json.loads(labels.stdout) or {}):
        return STAND_IN_BASE, "stand-in (mmdebstrap, cached)"
    build_stand_in()
    return STAND_IN_BASE, "stand-in (mmdebstrap, built now)"


def build_stand_in() -> None:
    """Debian bookworm, minimal, with its Python 3.11 and venv, as localhost/python:3.11-slim."""
    require_tools("mmdebstrap")
    started = time.monotonic()
    log(f"building the stand-in base with mmdebstrap ({STAND_IN_PACKAGES})")
    with tempfile.TemporaryDirectory(prefix="digits-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        run("mmdebstrap", "--variant=minbase", f"--include={STAND_IN_PACKAGES}", "bookworm", str(rootfs),
            timeout=900)
        run("podman", "import",
            "--change", "ENV LANG=C.UTF-8",
            "--change", 'CMD ["python3"]',
            "--change", f"LABEL {STAND_IN_LABEL}=mmdebstrap-bookworm-minbase",
            str(rootfs), STAND_IN_BASE, timeout=600)
    log(f"stand-in base {STAND_IN_BASE}: {time.monotonic() - started:.0f} s")


# --- Building ---------------------------------------------------------------------------------------
@dataclass
class Built:
    tag: str
    dockerfile: str
    build_args: dict[str, str]
    seconds: float
    size_bytes: int


def build(image: Image, base: str, tag: str, labels: dict[str, str]) -> Built:
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{image.name}{image.suffix}.log"
    args = {"PYTHON_IMAGE": base, **image.build_args}
    command = [
        "podman", "build", "--isolation", "chroot", "--pull=never", "--network=host", "--layers",
        "--format", "docker",  # keeps HEALTHCHECK, which the OCI format drops
        # The host's CA bundle (the proxy's CA), which pip uses through the PIP_CERT build argument.
        *(["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"] if Path(HOST_CA_BUNDLE).is_file() else []),
        *[f"--build-arg={k}={v}" for k, v in args.items()],
        *[f"--label={k}={v}" for k, v in labels.items()],
        "--label", f"org.opencontainers.image.title={image.name}",
        "-f", image.dockerfile, "-t", tag, *[x for alias in image.aliases() for x in ("-t", alias)], ".",
    ]
    log(f"building {tag} ({image.dockerfile}{', DEVICE=' + image.variant if image.variant else ''}); "
        f"log: {log_path.relative_to(ROOT)}")
    started = time.monotonic()
    with open(log_path, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if line.startswith("STEP "):  # progress: one line per Dockerfile instruction
                print(f"    {time.monotonic() - started:6.0f} s  {line.strip()[:120]}", flush=True)
        returncode = process.wait(timeout=BUILD_TIMEOUT_S)
    seconds = time.monotonic() - started
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"building {tag} failed ({returncode}) after {seconds:.0f} s:\n{tail}")
    built = Built(tag, image.dockerfile, args, round(seconds, 1), image_size(tag))
    log(f"built {tag}: {built.size_bytes / 1e6:,.0f} MB in {seconds:.0f} s")
    return built


def build_all(train_variants: list[str]) -> dict:
    require_tools("podman", "buildah", "git")
    started = time.monotonic()
    free = shutil.disk_usage("/var/lib/containers" if Path("/var/lib/containers").exists() else "/").free
    log(f"disk free for container storage: {free / 1e9:.0f} GB")
    if "gpu" in train_variants and free < GPU_BUILD_BYTES:
        raise SystemExit(f"the GPU training image needs about {GPU_BUILD_BYTES / 1e9:.0f} GB free to build; "
                         "free some, or build the CPU variant only: IMAGES_TRAIN_VARIANTS=cpu make images")
    base, origin = base_image()
    log(f"base: {base} ({origin})")
    commit, dirty = revision()
    tag = version_tag()
    labels = {"org.opencontainers.image.version": project_version(),
              "org.opencontainers.image.revision": commit + ("-dirty" if dirty else ""),
              "org.opencontainers.image.created": datetime.datetime.now(datetime.UTC).isoformat(
                  timespec="seconds")}
    results = [build(image, base, image.tag(tag), labels) for image in images(train_variants)]
    summary = {"version_tag": tag, "base": base, "base_origin": origin, "labels": labels,
               "images": [asdict(r) for r in results],
               "total_seconds": round(time.monotonic() - started, 1)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\nimages built (base: " + f"{base}, {origin})")
    for r in results:
        print(f"  {r.tag:55s} {r.size_bytes / 1e6:8,.0f} MB  {r.seconds:6.0f} s")
    print(f"  total {summary['total_seconds']:.0f} s; summary: {(OUT / 'build.json').relative_to(ROOT)}")
    return summary


# --- requirements/lock-gpu.txt ------------------------------------------------------------------------
LOCK_HEADER = """\
# The CUDA wheels of the GPU training image (Dockerfile.train, DEVICE=gpu), pinned: what
# `tensorflow[and-cuda]` (requirements/train-gpu.txt) adds to requirements/lock.txt, which pins
# everything else. Used as a second constraints file:
#   pip install -c requirements/lock.txt -c requirements/lock-gpu.txt -r requirements/train-gpu.txt
# Generated, do not edit: `python scripts/images.py lock-gpu` resolves, without installing,
#   pip install --dry-run --ignore-installed --only-binary=:all: --report REPORT \\
#       -c requirements/lock.txt -r requirements/train-gpu.txt
# with the project's CPython 3.11 on Linux x86_64, as the images (pip --isolated: no local
# indexes or constraints), and writes here the packages of the report lock.txt does not pin
# (pip, setuptools and wheel left out, as in lock.txt: the virtual environment's own).
"""


INSTALL_TOOLS = {"pip", "setuptools", "wheel"}  # the venv's own, unpinned as in lock.txt


def lock_gpu() -> None:
    """Resolve tensorflow[and-cuda] under lock.txt and pin what it adds (the nvidia-* wheels)."""
    # pip resolves for the interpreter that runs it: the images' CPython 3.11 on Linux x86_64.
    if sys.version_info[:2] != (3, 11) or sys.platform != "linux" or os.uname().machine != "x86_64":
        raise SystemExit("lock-gpu resolves for the images' platform: run it with CPython 3.11 on "
                         "Linux x86_64 (the project's venv)")
    with tempfile.TemporaryDirectory(prefix="digits-lock-") as scratch:
        report_path = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
                   "--only-binary=:all:", "--quiet", "--report", str(report_path),
                   "-c", str(ROOT / "requirements" / "lock.txt"), "-r", str(GPU_REQUIREMENTS)]
        if os.environ.get("PIP_CERT") or Path(HOST_CA_BUNDLE).exists():
            command[4:4] = ["--cert", os.environ.get("PIP_CERT", HOST_CA_BUNDLE)]
        log("resolving " + " ".join(command[3:]))
        run(*command, timeout=900)
        report = json.loads(report_path.read_text())
    locked = {_canonical(line.split("==")[0]) for line in
              (ROOT / "requirements" / "lock.txt").read_text().splitlines() if "==" in line}
    added = sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"]
                   if _canonical(item["metadata"]["name"]) not in locked | INSTALL_TOOLS)
    GPU_LOCK.write_text(LOCK_HEADER + "".join(f"{name}=={version}\n" for name, version in added))
    log(f"wrote {GPU_LOCK.relative_to(ROOT)}: {len(added)} pins")


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


# --- Command line -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/images.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the three images")
    build_cmd.add_argument("--train-variants", default="gpu,cpu",
                           help="training image variants to build, comma-separated (default: gpu,cpu)")
    smoke_cmd = commands.add_parser("smoke", help="run the built images (scripts/images_smoke.py)")
    smoke_cmd.add_argument("--tag", help="the VERSION-gREV tag to test (default: this tree's)")
    commands.add_parser("lock-gpu", help="regenerate requirements/lock-gpu.txt")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.command == "build":
        variants = [v.strip() for v in args.train_variants.split(",") if v.strip()]
        unknown = set(variants) - set(TRAIN_VARIANTS)
        if unknown or not variants:
            parser.error(f"--train-variants takes {', '.join(TRAIN_VARIANTS)}, not {args.train_variants!r}")
        build_all(variants)
    elif args.command == "smoke":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the smoke test imports TensorFlow's stubs
        import images_smoke  # beside this file; imported here, as only `smoke` needs it

        return images_smoke.smoke(args.tag or version_tag())
    else:
        lock_gpu()
    return 0


if __name__ == "__main__":
    sys.exit(main())
