# wavemlp-kit: every target works on a fresh clone and creates the virtual environment when missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WMLP := $(VENV)/bin/wmlp
# The dev/CI torch: these exact builds lie on the CI machines' disk (see README, "Development").
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
GPU ?= cpu

.PHONY: help install test lint demo image smoke clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)  ## create .venv with torch and the kit (editable, with dev tools)

test: $(STAMP)  ## run the test suite (starts its own Slurm cluster and Docker engine where installed)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, and vermin: the package runs inside vendor images on Python 3.8 (the image builder is host-only)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/vermin -q -t=3.8- --no-tips --violations --eval-annotations --backport dataclasses --exclude-regex '^\.venv|wavemlp/image/build.py' wavemlp

DEMO_DATA ?= data/digits
DEMO_RUN ?= runs/demo

demo: $(STAMP)  ## build the digits data, train WaveMLP_T_dw on the CPU, evaluate the best checkpoint, print results
	$(WMLP) data demo --output $(DEMO_DATA)
	$(WMLP) train --recipe cpu-demo --data $(DEMO_DATA) --run-dir $(DEMO_RUN) --resume auto
	$(WMLP) eval --model WaveMLP_T_dw --checkpoint $(DEMO_RUN)/checkpoints/best.pth --data $(DEMO_DATA) \
		--use-ema --workers 1 --json $(DEMO_RUN)/eval.json
	$(WMLP) report $(DEMO_RUN) --output $(DEMO_RUN)/report

# Device access for `make smoke` (e.g. "--gpus all" on NVIDIA, "--privileged -v /dev:/dev" on CoreX).
DOCKER_RUN_ARGS ?=

# Extra CA certificates (PEM) for pip inside the build, for sites behind a TLS-intercepting proxy.
EXTRA_CA ?=

image: $(STAMP)  ## build the container image of a target recipe: make image GPU=<target> (`wmlp image build -h` lists them)
	$(WMLP) image build --target $(GPU) $(if $(EXTRA_CA),--extra-ca "$(EXTRA_CA)")

smoke: $(STAMP)  ## one training step, checkpoint round trip and eval step inside the built image of GPU=...
	$(WMLP) image smoke --target $(GPU) --docker-arg "$(DOCKER_RUN_ARGS)"

clean:  ## remove the virtual environment and build leftovers (runs/ is kept)
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
