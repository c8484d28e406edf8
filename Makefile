# Cadence: one command to run, one to test. See README.md.
#
#   make run                  embedded PostgreSQL + Redis (unless *_URL is set), migrate, demo data,
#                             uvicorn + Celery worker; Ctrl-C stops everything. Installs every
#                             framework (requirements-extras.txt: LangGraph, OpenAI Agents SDK);
#                             `make run FRAMEWORKS=native` installs only the native engine
#   make test ARGS="-k foo"   the whole suite (pytest), with the embedded services when needed
#   make lint                 ruff check + ruff format --check
#   make venv                 .venv with the development requirements
#   make clean                remove .venv and caches (keeps var/)
#   make clean-data           remove var/ (database, Redis data, demo credentials)

SHELL := /bin/sh
.DEFAULT_GOAL := run

# Python 3.11 is what CI runs; any python3 >= 3.11 works.
BOOTSTRAP_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# `all`: requirements.txt and requirements-extras.txt (every framework); `native`: the first only.
FRAMEWORKS ?= all
RUN_REQS := requirements.txt $(if $(filter native,$(FRAMEWORKS)),,requirements-extras.txt)

# Installs are skipped while the requirements files are unchanged: the stamp's name carries
# their checksum, so an edited requirements file names a stamp that does not exist yet.
RUN_SUM := $(shell cat $(RUN_REQS) | cksum | cut -d' ' -f1)
DEV_SUM := $(shell cat requirements.txt requirements-extras.txt requirements-dev.txt | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(RUN_SUM)
DEV_STAMP := $(VENV)/.installed-dev-$(DEV_SUM)
PIP_FLAGS := --disable-pip-version-check $(if $(CI),--progress-bar off,)

.PHONY: run test lint venv clean clean-data

run: $(RUN_STAMP)
	@exec $(PY) -m cadence_site.launcher run

test: $(DEV_STAMP)
	@exec $(PY) -m cadence_site.launcher test $(ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

venv: $(DEV_STAMP)

$(PY):
	@test -n "$(BOOTSTRAP_PYTHON)" || { echo "Python 3.11 not found (python3.11 or python3)" >&2; exit 1; }
	@echo "==> creating $(VENV) with $(BOOTSTRAP_PYTHON) ($$($(BOOTSTRAP_PYTHON) --version))"
	@$(BOOTSTRAP_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Cadence needs Python >= 3.11" >&2; exit 1; }
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

$(RUN_STAMP): | $(PY)
	@echo "==> installing $(RUN_REQS) into $(VENV) (the first time takes a few minutes)"
	$(PY) -m pip install $(PIP_FLAGS) $(addprefix -r ,$(RUN_REQS))
	@rm -f $(VENV)/.installed-run-*
	@touch $@

$(DEV_STAMP): | $(PY)
	@echo "==> installing requirements-dev.txt into $(VENV) (the first time takes a few minutes)"
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-dev.txt
	@rm -f $(VENV)/.installed-dev-* $(VENV)/.installed-run-*
	@# requirements-dev.txt includes requirements.txt, so `make run` needs no install after this
	@touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis staticfiles
	find . -path ./var -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

clean-data:
	@if [ -f var/services.json ] && kill -0 "$$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' var/services.json | head -n 1)" 2>/dev/null; then \
		echo "var/ is in use by a running launcher (var/services.json): stop it first" >&2; exit 1; \
	fi
	rm -rf var
