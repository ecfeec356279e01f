# The README's commands. Each target sets itself up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
CHECKOV_VENV := .venv-checkov
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt constraints.txt layers/ucoauth/requirements.txt layers/ucoauth/pyproject.toml client/pyproject.toml | sha1sum | cut -c1-12)
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell cat requirements-checkov.txt | sha1sum | cut -c1-12)
PY313 := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin) /usr/bin)
export PATH := $(abspath $(VENV)/bin):$(PY313):$(PATH)

.PHONY: dev test unit checkov-env lint typecheck invoke events webhook reliability bench bench-deps clean system-deps venv

# The toolchain runs the Lambda runtime's Python (python3.13): a venv of another version is rebuilt.
# The layer's package and the client (with its `ucoauth` command line, .venv/bin/ucoauth) are
# installed editable, without dependencies: theirs are in requirements-dev.txt already.
$(STAMP):
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null || { rm -rf $(VENV); python3.13 -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e ./layers/ucoauth
	$(PY) -m pip install -q --no-deps --no-build-isolation -e ./client
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

## checkov-env: checkov in its own venv, outside the project's constraints (the template test runs it)
$(CHECKOV_STAMP): requirements-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || python3.13 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r requirements-checkov.txt
	@rm -f $(CHECKOV_VENV)/.installed-*; touch $@

checkov-env: $(CHECKOV_STAMP)

# The venv's python finds the layer package, the local stack and the tests without PYTHONPATH
# (so `.venv/bin/python -m devstack.sign_webhook DEMO1` works from anywhere).
PTH := $(VENV)/.paths-$(shell echo $(CURDIR) | sha1sum | cut -c1-12)
$(PTH): $(STAMP) Makefile
	$(PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'ultracart_oauth_dev.pth').write_text('\n'.join(['$(CURDIR)/layers/ucoauth', '$(CURDIR)/local', '$(CURDIR)', '$(CURDIR)/client']) + '\n')"
	@rm -f $(VENV)/.paths-*; touch $@

## system-deps: Debian's chromium for the browser test (installed when missing and we are root)
system-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "Install Debian's chromium package (sudo apt-get install chromium)"; exit 1; fi; }

## dev: the whole system on 127.0.0.1 (moto, UltraCart sandbox, local gateway)
dev: $(STAMP) $(PTH)
	$(PY) -m devstack

## invoke: run one handler against the running local stack: make invoke FN=TokenApiFunction EVENT=events/x.json
invoke: $(STAMP) $(PTH)
	$(PY) -m devstack.invoke $(FN) $(EVENT)

## events: rewrite the live events (callback-success, webhook-uninstall) and events/env.json against the running local stack
events: $(STAMP) $(PTH)
	$(PY) -m devstack.events

lint: $(STAMP)
	ruff check .
	ruff format --check .

typecheck: $(STAMP)
	mypy

## unit: the fast loop: unit tests only (moto in-process, a fake UltraCart), no network, no browser, no build
unit: $(STAMP)
	pytest tests/unit -m "not slow and not integration" -q -n 2 --dist loadgroup -p no:cacheprovider

## test: every check: ruff, mypy --strict, template lint and build, all tests
test: $(STAMP) $(PTH) $(CHECKOV_STAMP) system-deps lint typecheck
	pytest -n 2 --dist loadgroup

## webhook: sign an uninstall webhook for the running local stack and send it: make webhook MERCHANT=DEMO1
webhook: $(STAMP) $(PTH)
	$(PY) -m devstack.sign_webhook $(or $(MERCHANT),DEMO1) --send

## reliability: fault matrix, fuzzing and races at full size; regenerates docs/RELIABILITY.md
reliability: $(STAMP) $(PTH)
	$(PY) -m bench.reliability

## bench-deps: Debian's valgrind, which counts each cold start's instructions (installed when missing and we are root)
bench-deps:
	@command -v valgrind >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; \
	  else echo "valgrind is missing (sudo apt-get install valgrind): the bench reports wall-clock ratios only"; fi; }

## bench: cold start, calls per operation, planner reads, refresh pacing, memory -> docs/BENCHMARKS.md
bench: $(STAMP) $(PTH) bench-deps
	$(PY) -m bench
	$(PY) -m bench.modules
	$(PY) -m bench.capacity
	$(PY) -m bench.cost

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .aws-sam .mypy_cache .ruff_cache .pytest_cache artifacts
