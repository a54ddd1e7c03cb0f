# cpro: make demo | make test | make bench | make fuzz | make lint
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all demo test unit integration fuzz bench lint clean system-deps

all: test

# Debian packages the integration tests and the lab use (installed only when root and missing).
SYSTEM_PACKAGES := iproute2 nftables procps keepalived iputils-ping iputils-arping socat openipmi ipmitool
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || exit 1; fi; \
	fi

SOURCES := $(shell find cpro twisted -name '*.py' 2>/dev/null)

$(STAMP): setup.cfg setup.py pyproject.toml $(SOURCES)
	@if ! $(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q .
	touch $(STAMP)

test: system-deps $(STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/trial --temp-directory=_trial_temp test

unit: $(STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/trial --temp-directory=_trial_temp test.unit

integration: system-deps $(STAMP)
	PYTHONPATH=$(CURDIR) $(VENV)/bin/trial --temp-directory=_trial_temp test.integration

# Every fuzz target for FUZZ_SECONDS each (default 120), with a fresh random
# seed (FUZZ_SEED=N repeats a run); findings are written to _fuzz/.
FUZZ_SECONDS ?= 120
fuzz: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m test.fuzz --seconds $(FUZZ_SECONDS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED)) $(FUZZ_TARGETS)

demo: system-deps $(STAMP)
	$(PY) -m cpro.testing.demo

# Every benchmark in turn (bench/*.py); each one's output is shown and kept in
# _bench/NAME.log (its last line is its JSON). Fails if any of them failed.
bench: system-deps $(STAMP)
	@mkdir -p _bench; failed=""; \
	for script in bench/*.py; do \
	  name=$$(basename $$script .py); echo "=== $$script (output kept in _bench/$$name.log)"; \
	  { $(PY) $$script; echo $$? > _bench/$$name.rc; } 2>&1 | tee _bench/$$name.log; \
	  [ "$$(cat _bench/$$name.rc)" = 0 ] || failed="$$failed $$name"; rm -f _bench/$$name.rc; \
	done; \
	if [ -n "$$failed" ]; then echo "benchmarks that failed:$$failed"; exit 1; fi

lint: $(STAMP)
	$(PY) -m pyflakes cpro test bench 2>/dev/null || $(PY) -m pip install -q pyflakes && $(PY) -m pyflakes cpro test bench

clean:
	rm -rf $(VENV) _trial_temp _bench _fuzz *.egg-info
