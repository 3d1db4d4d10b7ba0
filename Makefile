# Two entry points a newcomer needs (see README.md): `make demo` and `make test`.
# Both install what is missing first: Debian packages (redis-server, redis-tools, openssh-server,
# chromium for the HTML timeline test; prometheus, prometheus-alertmanager, prometheus-redis-exporter
# for the alert-to-procedure test) and a virtualenv with the project in editable mode.
# Where an init system starts the prometheus packages' services, it does not matter: the tests start
# their own processes on free loopback ports with temp storage and never talk to the system ones.

VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := redis-server redis-tools openssh-server chromium prometheus prometheus-alertmanager prometheus-redis-exporter

.PHONY: setup system-packages venv demo test lint bench

setup: system-packages venv

system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	command -v prometheus-redis-exporter >/dev/null 2>&1 || missing="$$missing prometheus-redis-exporter"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$(echo $$missing | tr ' ' '\n' | sort -u) >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/runbook run redis/health-check --sandbox

# The suite mostly waits (servers starting, polls, CLI processes), so it runs in PYTEST_WORKERS processes;
# --dist loadfile keeps each test file in one of them, so a module fixture (one `rehearse --all`) runs once;
# files go out in collection order, which tests/conftest.py starts with the longest (not by test count).
PYTEST_WORKERS ?= 3

test: setup
	$(VENV)/bin/ruff check engine tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

lint: venv
	$(VENV)/bin/ruff check engine tests bench
	$(VENV)/bin/ruff format --check engine tests bench
	$(VENV)/bin/mypy
