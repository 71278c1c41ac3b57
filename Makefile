# Developer and CI entry points of the netbsd.pf collection.
#
#   make demo   show the collection at work on an emulated firewall fleet
#   make test   every test tier that exists (what CI runs through .ci/run)
#
# Everything runs from .venv (Python 3.11, requirements-dev.txt), created on
# first use and refreshed when requirements-dev.txt changes.  ansible-test
# needs the collection under ansible_collections/netbsd/pf/, so the tiers work
# on a copy in build/ansible_collections/netbsd/pf/ (tools/sync-collection.py).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
VENV_STAMP := $(VENV)/.requirements-dev.stamp
BUILD := $(ROOT)/build
COPY := $(BUILD)/ansible_collections/netbsd/pf
PYTHONS_DIR := $(ROOT)/tools/bin

# tools/bin first: ansible-test finds the Pythons 3.8-3.13 there.
export PATH := $(PYTHONS_DIR):$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# ansible-test units (tools/run-units.sh): the tests of target-side code
# (modules, module_utils) on UNITS_PYTHONS ("all": every Python in tools/bin),
# the controller tests on UNITS_CONTROLLER_PYTHON, that of .venv; e.g.
# `make units UNITS_PYTHONS="3.8 3.13"`.
UNITS_PYTHONS ?= all
UNITS_CONTROLLER_PYTHON ?= 3.11
ANSIBLE_TEST_OPTIONS ?= --color no

TIERS := sanity units integration molecule examples lint docs-lint docs-check changelog-lint package compat

.PHONY: help test demo bench fuzz docs docs-check compat clean distclean venv pythons copy ansible-test-setup system-packages $(TIERS)

help:
	@echo "make demo            run the demo (tests/demo/run-demo.sh)"
	@echo "make test            run every test tier: $(TIERS)"
	@echo "make <tier>          run one tier"
	@echo "make docs            HTML documentation site in build/docs/html (docs-check: open it in Chromium)"
	@echo "make compat          unit tests and a playbook with the newest ansible-core on Python 3.13"
	@echo "make bench | fuzz | clean | distclean"

test: venv
	@tools/run-tiers.sh $(TIERS)

# --- environment --------------------------------------------------------------

pythons:
	@tools/link-pythons.sh

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-dev.txt | pythons
	@if ! $(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then \
		python=$(PYTHONS_DIR)/python3.11; [ -x "$$python" ] || python=python3.11; \
		echo "Creating $(VENV) with $$python"; \
		rm -rf $(VENV); "$$python" -m venv $(VENV); \
	fi
	$(VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

copy: venv
	@$(VENV)/bin/python tools/sync-collection.py $(COPY)

ansible-test-setup: copy
	@$(VENV)/bin/python tools/install-get-pip-bootstrap.py

system-packages:
	@tools/ensure-system-packages.sh sshd=openssh-server nc=netcat-openbsd ip=iproute2

# --- test tiers -----------------------------------------------------------------

# shellcheck is optional: without it ansible-test skips its shellcheck test.
sanity: ansible-test-setup
	@tools/ensure-system-packages.sh shellcheck=shellcheck \
		|| echo "shellcheck not installed: ansible-test will skip its shellcheck test"
	cd $(COPY) && ansible-test sanity --venv $(ANSIBLE_TEST_OPTIONS)

units: ansible-test-setup
	@if [ ! -d tests/unit ]; then echo "SKIP units: no tests/unit/ yet"; exit 0; fi; \
	versions="$(UNITS_PYTHONS)"; \
	if [ "$$versions" = all ]; then versions=$$(cd $(PYTHONS_DIR) && ls python3.* | sed 's/^python//' | sort -V); fi; \
	ANSIBLE_TEST_OPTIONS="$(ANSIBLE_TEST_OPTIONS)" tools/run-units.sh $(COPY) $(UNITS_CONTROLLER_PYTHON) $$versions

# The scripts build an emulated fleet (network namespaces, sshd): root only.
integration: copy
	@scripts=$$(ls tests/integration/run-*.sh 2>/dev/null || true); \
	if [ -z "$$scripts" ]; then echo "SKIP integration: no tests/integration/run-*.sh yet"; exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then echo "integration needs root (network namespaces, sshd)" >&2; exit 1; fi; \
	tools/ensure-system-packages.sh sshd=openssh-server nc=netcat-openbsd ip=iproute2; \
	failed=(); \
	for script in $$scripts; do \
		echo "--- $$script"; \
		ANSIBLE_COLLECTIONS_PATH=$(BUILD) bash "$$script" || failed+=("$$script"); \
	done; \
	if [ "$${#failed[@]}" -ne 0 ]; then echo "integration scripts failed: $${failed[*]}" >&2; exit 1; fi

molecule: copy
	@if [ -z "$$(ls extensions/molecule/*/molecule.yml 2>/dev/null)" ]; then \
		echo "SKIP molecule: no scenario in extensions/molecule/ yet"; exit 0; fi; \
	tools/ensure-system-packages.sh sshd=openssh-server nc=netcat-openbsd ip=iproute2; \
	cd $(COPY) && ANSIBLE_COLLECTIONS_PATH=$(BUILD) molecule test --all

# Every ```yaml fence of README.md and docs/*.md, extracted from the Markdown by
# its marker (docs/testing.md, "Examples in the docs"): run against a local
# emulated fleet, or syntax-checked and linted when it needs a real NetBSD.
# EXAMPLES_OPTIONS="--flavour ssh" runs them over sshd in network namespaces (root).
EXAMPLES_OPTIONS ?=

examples: copy
	ANSIBLE_COLLECTIONS_PATH=$(BUILD) $(VENV)/bin/python tools/run-doc-examples.py $(EXAMPLES_OPTIONS)

# ansible-lint reads what Ansible content there is: roles, playbooks, scenarios.
LINTED_DIRS := roles playbooks extensions

lint: copy
	@if [ -z "$$(find $(LINTED_DIRS) -name '*.yml' 2>/dev/null | head -n 1)" ]; then \
		echo "SKIP lint: no roles, playbooks or molecule scenarios yet"; exit 0; fi; \
	cd $(COPY) && ANSIBLE_COLLECTIONS_PATH=$(BUILD) ansible-lint --nocolor

docs-lint: copy
	cd $(COPY) && antsibull-docs lint-collection-docs --plugin-docs .

changelog-lint: venv
	antsibull-changelog lint
	antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml

# Build the release tarball, install it into an empty collections path, render
# every module's documentation from that installed copy and run a playbook with
# it (tools/package-smoke.yml), then once more as an AWX job would run it, through ansible-runner
# (tools/runner-check.py); the listing must hold no test output or caches.
PACKAGE_FORBIDDEN := (^|/)(\.venv[^/]*|build|tests/output|__pycache__|\.hypothesis|\.pytest_cache|bench|tools)(/|$$)|\.pyc$$

package: copy
	@rm -rf $(BUILD)/dist $(BUILD)/installed $(BUILD)/package-smoke
	ansible-galaxy collection build --output-path $(BUILD)/dist $(COPY)
	@tarball=$$(ls $(BUILD)/dist/netbsd-pf-*.tar.gz); \
	forbidden=$$(tar -tzf "$$tarball" | grep -E '$(PACKAGE_FORBIDDEN)' || true); \
	if [ -n "$$forbidden" ]; then echo "$$tarball holds files it must not:" >&2; echo "$$forbidden" >&2; exit 1; fi; \
	echo "$$tarball: $$(tar -tzf "$$tarball" | wc -l) entries, $$(du -k "$$tarball" | cut -f1) KiB, no test output or caches"
	ANSIBLE_COLLECTIONS_PATH=$(BUILD)/installed ansible-galaxy collection install --offline -p $(BUILD)/installed $(BUILD)/dist/netbsd-pf-*.tar.gz
	@modules=$$(cd $(BUILD)/installed/ansible_collections/netbsd/pf/plugins/modules 2>/dev/null \
		&& ls *.py 2>/dev/null | grep -v '^__init__' | sed 's/\.py$$//' || true); \
	if [ -z "$$modules" ]; then echo "no modules yet: nothing for ansible-doc"; exit 0; fi; \
	for module in $$modules; do \
		ANSIBLE_COLLECTIONS_PATH=$(BUILD)/installed ansible-doc -t module "netbsd.pf.$$module" > /dev/null; \
		echo "ansible-doc netbsd.pf.$$module: ok"; \
	done
	@mkdir -p $(BUILD)/package-smoke
	ANSIBLE_COLLECTIONS_PATH=$(BUILD)/installed ansible-playbook -i localhost, -c local tools/package-smoke.yml \
		-e work_dir=$(BUILD)/package-smoke -e ansible_python_interpreter=$(VENV)/bin/python
	ansible-builder introspect --sanitize $(BUILD)/installed
	python tools/runner-check.py $(BUILD)/installed tools/package-smoke.yml $(BUILD)/runner \
		--extra-var work_dir=$(BUILD)/package-smoke

# The newest ansible-core on Python 3.13 (or 3.12): unit tests with plain pytest
# and the end-to-end smoke playbook on a local emulated fleet (tools/compat.sh).
compat: copy
	@tools/compat.sh

# --- other entry points -----------------------------------------------------------

demo: copy
	@if [ ! -f tests/demo/run-demo.sh ]; then \
		echo "The demo (tests/demo/run-demo.sh, not written yet) will start an emulated fleet of"; \
		echo "NetBSD firewalls, fill their state tables, dump and restore them with the"; \
		echo "netbsd.pf modules and show that the connections survived."; \
		exit 0; fi; \
	ANSIBLE_COLLECTIONS_PATH=$(BUILD) bash tests/demo/run-demo.sh

bench: copy
	@if [ ! -f bench/run.sh ]; then echo "SKIP bench: no bench/run.sh yet"; exit 0; fi; \
	ANSIBLE_COLLECTIONS_PATH=$(BUILD) bash bench/run.sh

# Mutation fuzzing of the dump readers; e.g. `make fuzz FUZZ_OPTIONS="--inputs 2000"`.
FUZZ_OPTIONS ?=

fuzz: copy
	@if [ ! -f tests/fuzz/run_fuzz.py ]; then echo "SKIP fuzz: no tests/fuzz/run_fuzz.py yet"; exit 0; fi; \
	cd $(COPY) && NETBSD_PF_COLLECTIONS=$(BUILD) python tests/fuzz/run_fuzz.py $(FUZZ_OPTIONS)

# HTML site in build/docs/html/: module and role references plus the guides of
# docs/ (tools/docs-build.sh; its tools live in .venv-docs, requirements-docs.txt).
docs: copy
	@tools/docs-build.sh

# Open every page of the site and a sample capture report (rendered from the
# capture role's template) in headless Chromium; fails on JavaScript errors,
# console errors and missing resources. Screenshots in build/docs-check/.
docs-check: docs
	@tools/ensure-system-packages.sh chromium=chromium
	@mkdir -p $(BUILD)/docs-check
	@$(ROOT)/.venv-docs/bin/ansible-playbook -i fw1,fw2,fw3,fw4, tools/docs-check-sample-report.yml \
		-e report_path=$(BUILD)/docs-check/capture-report.html > $(BUILD)/docs-check/sample-report.log \
		|| { cat $(BUILD)/docs-check/sample-report.log; exit 1; }
	python3 tools/docs-check.py $(BUILD)/docs/html $(BUILD)/docs-check/capture-report.html $(BUILD)/docs-check

clean:
	rm -rf $(BUILD) $(PYTHONS_DIR) tests/output .pytest_cache .hypothesis
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(ROOT)/.venv-docs $(ROOT)/.venv-compat
