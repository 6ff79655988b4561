# Both targets do all set-up on a fresh machine: Debian packages, a venv, pip installs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PISTIO := $(VENV)/bin/pistio
SHARED ?= ../shared
# Debian packages the suite needs (more arrive with the mesh runtime and benchmarks).
DEB_PACKAGES := wrk haproxy iproute2 iptables

.PHONY: demo test lint setup deb clean

setup: $(VENV)/.installed

deb:
	@if [ -n "$(DEB_PACKAGES)" ]; then \
	  missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

lint: setup
	$(VENV)/bin/ruff check pistio tests

test: deb setup lint
	$(VENV)/bin/pytest -q

# Until the mesh runtime exists, the demo validates and analyzes the examples and Istio's samples.
demo: deb setup
	@echo "== pistio validate: our examples"
	$(PISTIO) validate -f examples/config/
	@echo "== pistio analyze: our examples (clean)"
	$(PISTIO) analyze examples/config/
	@echo "== pistio validate: a broken file (expected to fail, showing each error)"
	-$(PISTIO) validate -f examples/broken/
	@echo "== pistio analyze: the same file, with Istio's message codes (expected to fail)"
	-$(PISTIO) analyze examples/broken/
	@if [ -d $(SHARED)/conformance/istio-samples/bookinfo-networking ]; then \
	  echo "== pistio validate: Istio's Bookinfo networking samples"; \
	  $(PISTIO) validate -f $(SHARED)/conformance/istio-samples/bookinfo-networking/; \
	else echo "$(SHARED)/conformance is absent: skipping Istio's Bookinfo samples"; fi

clean:
	rm -rf $(VENV) *.egg-info
