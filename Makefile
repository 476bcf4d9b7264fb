# digits: two entry points on a fresh machine, each doing all of its own set-up.
#   make demo   the main job: quick grid -> selection -> export into models/lenet5/ -> serve it,
#               classify sample pictures over REST and gRPC, a short load test, a summary
#   make test   the test suite
# and, once set up:
#   make serve  serve the shipped model (pretrained/lenet5) on TF Serving's ports
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
MNIST_DIR ?= data/mnist
# Absolute, so that tests and processes started from other directories read the same files
# (`override`: a command-line MNIST_DIR=../rel/path is made absolute too).
override MNIST_DIR := $(abspath $(MNIST_DIR))
RUNS_DIR ?= runs
MODEL_BASE_PATH ?= models/lenet5
export MNIST_DIR
# TensorFlow's start-up chatter (CUDA probing, oneDNN notes) hides the progress we print.
export TF_CPP_MIN_LOG_LEVEL ?= 2

# The shipped models (pretrained/<name>/<version>/) and the config that serves them all.
PRETRAINED_CONFIG ?= pretrained/models.config
# Triton's perf_analyzer, installed by scripts/perf_analyzer.py where the tests look for it.
PERF_ANALYZER := .perf_analyzer/bin/perf_analyzer

.PHONY: venv demo serve test lint protos clean

# The project itself, editable, with every role's extra (pinned by the lock): console entry points
# digits-train, digits-serve, digits, digits-loadtest beside `python -m`.
$(VENV)/.installed: requirements/*.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -c requirements/lock.txt -e '.[train,serve,client,loadtest,dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PYTHON) scripts/demo.py --runs-dir $(RUNS_DIR) --model-base-path $(MODEL_BASE_PATH)

serve: venv
	$(BIN)/digits-serve --model_config_file $(PRETRAINED_CONFIG)

test: venv
	@# Debian packages some tests drive: chromium (tests/integration/test_web_page.py), wrk and h2load
	@# (tests/integration/test_perf.py), libb64-0d (linked by Triton's perf_analyzer, same file),
	@# prometheus (promtool: tests/monitoring checks and unit-tests monitoring/rules.yml).
	@# Without them those tests are skipped, saying why.
	@command -v chromium >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1 && dpkg -s libb64-0d >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { DEBIAN_FRONTEND=noninteractive timeout 900 sh -c 'apt-get update -qq && apt-get install -y -qq chromium wrk nghttp2-client libb64-0d prometheus' >/dev/null 2>&1 && echo "installed chromium, wrk, h2load, libb64-0d, prometheus"; } || echo "could not install chromium, wrk, h2load, libb64-0d, prometheus (apt-get as root): the browser, perf and Prometheus rule tests will be skipped"
	@# perf_analyzer itself: two pinned, hash-checked wheels, only its binary and CUDA runtime unpacked.
	@test -x $(PERF_ANALYZER) || timeout 900 $(PYTHON) scripts/perf_analyzer.py >/dev/null || echo "could not install perf_analyzer (scripts/perf_analyzer.py): its tests will be skipped"
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	MNIST_DIR=$(MNIST_DIR) $(PYTHON) -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

protos: venv
	$(PYTHON) scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache

# The real images, built and run without Docker (podman and buildah with chroot isolation; as root):
# docs/images.md. Too slow for `make test`. IMAGES_TRAIN_VARIANTS=cpu skips the GPU image (GBs).
IMAGES_TRAIN_VARIANTS ?= gpu,cpu
.PHONY: images images-smoke

images: venv
	$(PYTHON) scripts/images.py build --train-variants $(IMAGES_TRAIN_VARIANTS)

images-smoke: venv
	@# MNIST (verified; downloaded when missing, as make demo does) is mounted into the containers.
	$(PYTHON) -m training data
	$(PYTHON) scripts/images.py smoke
