# ds4h-gateway developer tasks (GNU make; Debian 12 / Raspberry Pi OS bookworm).
#   make venv      create .venv (Python >= 3.11) and install the project with dev + sim extras
#   make demo      run the self-contained demo (no external services)
#   make services  install the Debian packages the tests and benchmarks use (victoria-metrics, mosquitto, mosquitto-clients,
#                  chromium for the status page's browser test, and for tests/test_deploy.py: systemd, shellcheck,
#                  docker-compose)
#   make test      venv + services, then pytest (extra arguments: PYTEST_ARGS='-k sink -x')
#   make lint      ruff check + mypy
#   make bench     run the benchmarks

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.ds4h-installed
PYTEST_ARGS ?=
# chromium: the status page's browser test drives it headless with Playwright (no browser download)
APT_PACKAGES := victoria-metrics mosquitto mosquitto-clients systemd shellcheck docker-compose chromium
# package:binary pairs, the binaries the test fixtures run (one per package above)
APT_BINARIES := victoria-metrics:/usr/bin/victoria-metrics mosquitto:/usr/sbin/mosquitto mosquitto-clients:/usr/bin/mosquitto_pub \
	systemd:/usr/bin/systemd-analyze shellcheck:/usr/bin/shellcheck docker-compose:/usr/bin/docker-compose \
	chromium:/usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv demo services test lint bench clean

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

venv: $(VENV_STAMP)

# Re-run the install whenever pyproject.toml changes.
$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, $(PYTHON) is " + sys.version.split()[0])'
	@if [ ! -x $(PY) ]; then \
	  $(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "$(PYTHON) cannot create a venv: install python3-venv (sudo apt-get install -y python3-venv)" >&2; exit 1; }; \
	  echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -e '.[dev,sim]'
	@touch $@

demo: venv
	$(VENV)/bin/ds4h-gateway demo

# Installs only what is missing.  A temporary policy-rc.d keeps the packages from starting their
# system-wide daemons (VictoriaMetrics would listen on all interfaces; the tests start their own
# loopback-only instances on free ports), and keeps the install working in containers without an
# init system.  Set SERVICES_AUTOSTART=1 to let the packages start their daemons as usual.
services:
	@set -e; missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$pkg"; \
	done; \
	for pair in $(APT_BINARIES); do \
	  pkg=$${pair%%:*}; bin=$${pair#*:}; \
	  [ -x $$bin ] || case " $$missing " in *" $$pkg "*) ;; *) missing="$$missing $$pkg";; esac; \
	done; \
	if [ -z "$$missing" ]; then echo "services: $(APT_PACKAGES) already installed"; exit 0; fi; \
	if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	  echo "services: need root or sudo to run: apt-get install -y$$missing" >&2; exit 1; fi; \
	echo "services: installing$$missing"; \
	added_policy=""; \
	if [ "$(SERVICES_AUTOSTART)" != 1 ] && [ ! -e /usr/sbin/policy-rc.d ]; then \
	  printf '#!/bin/sh\n# temporary, from ds4h-gateway make services\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	  $(SUDO) chmod 755 /usr/sbin/policy-rc.d; added_policy=1; \
	fi; \
	trap '[ -z "$$added_policy" ] || $(SUDO) rm -f /usr/sbin/policy-rc.d' EXIT; \
	$(SUDO) apt-get update -q; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	for pair in $(APT_BINARIES); do bin=$${pair#*:}; [ -x $$bin ] || { echo "services: $$bin still missing" >&2; exit 1; }; done

test: venv services
	$(PY) -m pytest -q $(PYTEST_ARGS)

# runs both tools, fails if either fails
lint: venv
	@rc=0; \
	echo "$(VENV)/bin/ruff check ."; $(VENV)/bin/ruff check . || rc=1; \
	echo "$(VENV)/bin/mypy"; $(VENV)/bin/mypy || rc=1; \
	exit $$rc

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
