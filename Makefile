# Two entry points a newcomer needs: `make demo` and `make test`. Both call `make setup`, which is
# idempotent: it installs ffmpeg and espeak-ng (apt) when missing and a .venv with the project in editable mode.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR ?= demo_out

.PHONY: setup test demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v ffmpeg >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg; }
	@# espeak-ng speaks the sentences of the transcribe tests (they skip, saying so, without it)
	@command -v espeak-ng >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch; a bare `torch` requirement can pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/vipstream demo --workdir $(DEMO_DIR)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
