# invoice-gateway: `make run` starts the gateway, `make test` runs every test.
# Debian packages are listed once, in deps/, and the Dockerfile installs the same.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEB_RUNTIME := $(shell cat deps/debian-runtime.txt)
DEB_TEST := $(shell cat deps/debian-test.txt)
# only for `make bench`: Postfix (and its smtp-source) for the SMTP comparison
DEB_BENCH := $(shell cat deps/debian-bench.txt)
PYTEST_ARGS ?=

.PHONY: run test install install-test deb-runtime deb-test deb-bench bench lint clean help

help:
	@echo "make run    - create .venv, install, start the gateway (SMTP 2525, admin page 8080)"
	@echo "make test   - install what the tests need (Debian packages too, as root) and run every test"
	@echo "make bench  - run the benchmarks in bench/ and print their figures"
	@echo "make lint   - mypy --strict on gateway/ and web/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

install: deb-runtime $(VENV)/.installed

install-test: deb-runtime deb-test $(VENV)/.installed-test

# As root (a fresh Debian machine, CI, the Dockerfile) the packages are installed;
# otherwise the missing ones are named so you can install them.
deb-runtime:
	@./deps/apt-install.sh $(DEB_RUNTIME)

deb-test:
	@./deps/apt-install.sh $(DEB_TEST)
	@./deps/cyrus-imapd.sh $(VENV)/cyrus

# Postfix is preseeded "No configuration": the package then sets up and starts no system
# mail server (nothing listens on port 25); bench/smtp_throughput.py runs its own instance.
deb-bench:
	@if [ "$$(id -u)" = 0 ] && command -v debconf-set-selections >/dev/null; then \
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; fi
	-@./deps/apt-install.sh $(DEB_BENCH)  # without it (not root) the bench uses a Python client and skips Postfix

run: install
	$(VENV)/bin/invoice-gateway serve

# Two test processes (one per core, at most 4), each taking whole files: most tests wait on
# servers and subprocesses, so two run in about 60 % of the time one takes.
PYTEST_PROCS ?= auto --maxprocesses 4
test: install-test
	$(PY) -m pytest -n $(PYTEST_PROCS) --dist loadfile $(PYTEST_ARGS)

bench: install-test deb-bench
	$(PY) bench/run_all.py

lint: install-test
	$(PY) -m mypy gateway web

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache *.egg-info
