# Two commands for a new user: `make demo` (full publish on the embedded local Hub) and `make test`.
PY_SYS ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch lies on this machine's disk; installing it first keeps pip from pulling a
# multi-GB CUDA build to satisfy the `torch>=2.4` range in pyproject.toml.
TORCH  ?= torch==2.13.0
RECIPE ?=
FETCH  ?=
# Extras installed with the project: the test tools by default; the workflows install none (EXTRAS=).
EXTRAS ?= test

.PHONY: venv test test-all lint demo publish plan bench bench-stream gpu-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	touch $(STAMP)

# pytest-xdist: up to 4 worker processes (each with its own local Hub); many tests wait on a server or a subprocess
PYTEST_WORKERS ?= --numprocesses=auto --maxprocesses=4

test: $(STAMP)
	$(PY) -m ruff check pipeline tests bench
	$(PY) -m pytest -q -m "not slow" $(PYTEST_WORKERS)

# everything, the heavy robustness tests (marked slow) too: a few minutes
test-all: $(STAMP)
	$(PY) -m ruff check pipeline tests bench
	$(PY) -m pytest -q $(PYTEST_WORKERS)

lint: $(STAMP)
	$(PY) -m ruff check pipeline tests bench


demo: $(STAMP)
	$(PY) -m chatvector demo

publish: $(STAMP)
	@test -n "$(RECIPE)" || { echo "usage: make publish RECIPE=recipes/x.yaml" >&2; exit 2; }
	$(PY) -m chatvector publish "$(RECIPE)" $(if $(FETCH),--fetch "$(FETCH)")

plan: $(STAMP)
	@test -n "$(RECIPE)" || { echo "usage: make plan RECIPE=recipes/x.yaml" >&2; exit 2; }
	$(PY) -m chatvector plan "$(RECIPE)"

bench: $(STAMP)
	$(PY) bench/merge.py

bench-stream: $(STAMP)
	$(PY) bench/stream.py

# `chatvector sweep` (4 λ factors, one pass) against 4 separate `chatvector merge` runs: bench/sweep.py
.PHONY: bench-sweep
bench-sweep: $(STAMP)
	$(PY) bench/sweep.py

# uploads and downloads of the 953M triplet through the local Hub, Xet vs LFS vs curl, and the bytes a 4-variant
# `sweep --publish` uploads with Xet: bench/hub_transfer.py (`--size small --runs 1`: a quick check)
.PHONY: bench-hub
bench-hub: $(STAMP)
	$(PY) bench/hub_transfer.py

gpu-check: $(STAMP)
	bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache
