# pullstudy: the one entry point. `make reproduce` and `make test` work on a fresh clone.
# The virtual environment is created from the pins in pyproject.toml when missing or outdated.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_ARGS ?=
REPRODUCE_ARGS ?=
STUDY ?=
BACKEND ?= archive
RUN_ARGS ?=
PYTEST_ARGS ?=
# The lazy-pulling snapshotter daemon (tools/stargz), built from the library Debian packages.
STARGZ := $(VENV)/bin/pullstudy-stargz
STARGZ_LIB := golang-github-containerd-stargz-snapshotter-dev
DEBIAN_GOPATH := /usr/share/gocode
# The Debian packages the tests and the local backend need, each with what shows it is installed (the
# list tests/conftest.py checks; a test keeps the two in step). `make system` installs the missing ones.
SYSTEM_PACKAGES := docker-registry containerd iproute2 openssl golang-go $(STARGZ_LIB) stargz-snapshotter chromium mmdebstrap

.PHONY: help system env stargz maybe-stargz data verify-data reproduce run test test-fast lab bench catalog clean distclean

help:
	@echo "make reproduce    fetch + verify the archived data, run every notebook into results/"
	@echo "make test         fetch + verify the data, run the test suite"
	@echo "make test-fast    the tests that need no root, service or notebook (seconds)"
	@echo "make run STUDY=03-local-ssd BACKEND=local   one study; BACKEND=local measures on this machine"
	@echo "make system       as root with apt: install the missing Debian packages ($(SYSTEM_PACKAGES))"
	@echo "make stargz       build the lazy-pulling snapshotter (needs golang-go $(STARGZ_LIB))"
	@echo "make lab          JupyterLab on notebooks/ (127.0.0.1)"
	@echo "make bench        the benchmarks (each against its baseline, in the same run)"
	@echo "make data         fill data/raw/ from \$$PULLSTUDY_DATA_MIRROR or by download, verifying every file"
	@echo "make verify-data  re-check data/raw/: names every missing, altered or unknown file"
	@echo "make clean        remove results/ and caches (keeps .venv and data/raw)"
	@echo "make archive      the data folder as a deterministic, secret-scanned bundle in dist/ (RUNS=\"data/runs/<name> ...\")"
	@echo "make deposit      a Zenodo draft of the bundle with a reserved DOI (ZENODO_TOKEN; PUBLISH=1 publishes)"
	@echo "make data DOI=10.5281/zenodo.N   fetch and verify the data bundle of that record instead"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "pullstudy needs Python 3.11: set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# Idempotent: apt-get update and install only when something is missing. Not root, or no apt: only
# says what is missing (the tests that need it are then skipped, each naming the install command).
system:
	@need=""; \
	command -v docker-registry >/dev/null || need="$$need docker-registry"; \
	{ command -v containerd && command -v ctr; } >/dev/null || need="$$need containerd"; \
	{ command -v ip && command -v tc; } >/dev/null || need="$$need iproute2"; \
	command -v openssl >/dev/null || need="$$need openssl"; \
	command -v go >/dev/null || need="$$need golang-go"; \
	test -d $(DEBIAN_GOPATH)/src/github.com/containerd/stargz-snapshotter || need="$$need $(STARGZ_LIB)"; \
	command -v ctr-remote >/dev/null || need="$$need stargz-snapshotter"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v mmdebstrap >/dev/null || need="$$need mmdebstrap"; \
	command -v python3.11 >/dev/null || python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || \
	  need="$$need python3.11 python3.11-venv"; \
	test -n "$$need" || exit 0; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "make system: missing Debian packages:$$need (not root with apt: tests that need them are skipped;" \
	       "install with: sudo make system)"; exit 0; fi; \
	echo "make system: installing$$need"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq$$need >/dev/null

env: $(STAMP)

stargz: $(STARGZ)

# Built before `run` and `test` wherever Go and the library are installed (checked when it runs, so after
# `make system`); elsewhere lazy pulling is reported unavailable, with the hint.
maybe-stargz: $(STAMP)
	@if command -v go >/dev/null && test -d $(DEBIAN_GOPATH)/src/github.com/containerd/stargz-snapshotter; then \
	  $(MAKE) --no-print-directory -s $(STARGZ); fi

$(STARGZ): tools/stargz/main.go $(STAMP)
	@command -v go >/dev/null && test -d $(DEBIAN_GOPATH)/src/github.com/containerd/stargz-snapshotter || \
	  { echo "make stargz needs Go and the stargz library: apt-get install golang-go $(STARGZ_LIB) stargz-snapshotter"; exit 2; }
	cd tools/stargz && GO111MODULE=off GOPATH=$(DEBIAN_GOPATH) GOFLAGS= go build -trimpath \
	  -ldflags "-X main.libraryVersion=$$(dpkg-query -W -f '$${Version}' $(STARGZ_LIB) 2>/dev/null || echo unknown)" \
	  -o $(abspath $@) .

# DOI=10.5281/zenodo.N (or PULLSTUDY_DATA_DOI): the data bundle of that record instead (pullstudy.data.zenodo).
DOI ?= $(PULLSTUDY_DATA_DOI)
data: $(STAMP)
	$(if $(strip $(DOI)),$(PY) -m pullstudy.data.zenodo fetch $(DOI),$(PY) -m pullstudy.data.fetch fetch $(DATA_ARGS))

verify-data: $(STAMP)
	$(PY) -m pullstudy.data.fetch verify $(DATA_ARGS)

catalog: $(STAMP)
	$(PY) -m pullstudy.data.catalog build

reproduce: data
	$(PY) -m pullstudy.report.runner $(REPRODUCE_ARGS)

run: system data maybe-stargz
	@test -n "$(STUDY)" || { echo "usage: make run STUDY=<notebook, e.g. 03-local-ssd> [BACKEND=archive|local|kube] [RUN_ARGS='-p key=value']"; exit 2; }
	$(if $(filter kube,$(BACKEND)),$(PY) -m pullstudy.report.kube_cli --study $(STUDY) --results results/kube $(RUN_ARGS),$(PY) -m pullstudy.report.runner --only $(STUDY) --results results/$(BACKEND) $(if $(filter-out archive,$(BACKEND)),-p backend=$(BACKEND)) $(RUN_ARGS))

# Everything that needs no root, service or notebook: well under a minute.
FAST_MARKERS := not slow and not notebooks and not needs_packages
test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

test: system data maybe-stargz cite-tools
	$(PY) -m pytest $(PYTEST_ARGS)

bench: data maybe-stargz
	$(PY) benchmarks/parse_events.py
	$(PY) benchmarks/similarity.py
	$(PY) benchmarks/similarity_scale.py
	$(PY) benchmarks/reproduce_startup.py
	$(PY) benchmarks/app_starts.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --notebook-dir notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf results .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) data/raw

# Citable data (pullstudy.data.bundle): the deterministic deposit bundle in dist/, with its SHA-256 beside it.
.PHONY: archive
RUNS ?=
archive: $(STAMP)
	$(PY) -m pullstudy.data.bundle $(if $(strip $(RUNS)),--runs $(RUNS))

# cffconvert validates CITATION.cff in the tests; it needs jsonschema<4, so it lives in its own venv,
# pinned in pyproject.toml [tool.pullstudy.isolated-tools]. The RO-Crate 1.1 context lets roc-validator check the
# Workflow Run Crate offline (tools/ro_crate_context.py, pinned by SHA-256 in [tool.pullstudy.ro-crate-context]).
.PHONY: cite-tools
CFFCONVERT := $(VENV)/tools/cffconvert/bin/cffconvert
RO_CRATE_CONTEXT := $(VENV)/tools/ro-crate-1.1-context.jsonld
cite-tools: $(CFFCONVERT) $(RO_CRATE_CONTEXT)
$(RO_CRATE_CONTEXT): pyproject.toml tools/ro_crate_context.py $(STAMP)
	$(PY) tools/ro_crate_context.py $@
$(CFFCONVERT): pyproject.toml $(STAMP)
	rm -rf $(VENV)/tools/cffconvert
	$(PYTHON) -m venv $(VENV)/tools/cffconvert
	$(VENV)/tools/cffconvert/bin/pip install --quiet \
	  "cffconvert==$$($(PY) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["pullstudy"]["isolated-tools"]["cffconvert"])')"
	@touch $@

# A Zenodo deposition draft of the bundle (sandbox unless PULLSTUDY_ZENODO_API says otherwise; the token only
# from ZENODO_TOKEN); the reserved DOI goes into data/README.md and CITATION.cff. PUBLISH=1 publishes it.
.PHONY: deposit
PUBLISH ?=
PAPER_DOI ?=
deposit: archive
	$(PY) -m pullstudy.data.zenodo deposit $(if $(filter 1,$(PUBLISH)),--publish) $(if $(strip $(PAPER_DOI)),--paper-doi $(PAPER_DOI))
