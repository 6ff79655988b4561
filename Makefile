# Both targets do all set-up on a fresh machine: Debian packages, a venv, pip installs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PISTIO := $(VENV)/bin/pistio
SHARED ?= ../shared
# Debian packages the suite and the local node need (curl runs inside the example pods;
# setpriv, from util-linux, starts the sidecar as uid 1337; the observability tests scrape the
# mesh with a real Prometheus and drive the dashboard in headless Chromium).
DEB_PACKAGES := wrk haproxy iproute2 iptables curl util-linux prometheus chromium chromium-driver

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

# Bookinfo on the local node, with sidecars; the mesh keeps running until `pistio down`.
demo: deb setup
	@echo "== pistio analyze: the examples, as istioctl analyze would"
	$(PISTIO) analyze examples/bookinfo/ examples/curl/ examples/addons/
	@echo "== pistio up: the node (bridge, DNS, discovery, supervisor) and the examples"
	$(PISTIO) up -f examples/bookinfo -f examples/curl -f examples/addons
	$(PISTIO) get pods
	@echo "== some traffic: the product page, from the curl pod, through both sidecars"
	@for i in 1 2 3 4 5 6; do \
	  $(PISTIO) exec deploy/curl -- curl -s -o /dev/null -w "productpage: %{http_code} in %{time_total}s\n" productpage:9080/productpage; \
	done
	$(PISTIO) proxy-status
	@echo
	@echo "The mesh is running. Where to look:"
	@echo "  $(PISTIO) exec deploy/curl -- curl -s productpage:9080/productpage   # the page"
	@echo "  $(PISTIO) apply -f $(SHARED)/conformance/istio-samples/bookinfo-networking/destination-rule-all.yaml \\"
	@echo "      -f $(SHARED)/conformance/istio-samples/bookinfo-networking/virtual-service-all-v1.yaml    # Istio's tasks: docs/bookinfo.md"
	@echo "  $(PISTIO) proxy-config routes deploy/productpage-v1                   # what a sidecar was sent"
	@echo "  $(PISTIO) logs deploy/reviews-v2 -c istio-proxy                     # a sidecar's log"
	@echo "  $(PISTIO) exec deploy/productpage-v1 -- curl -s 127.0.0.1:15020/stats/prometheus   # Istio's metrics"
	@echo "  $(PISTIO) dashboard                                                 # the service graph on http://127.0.0.1:20001"
	@echo "  $(PISTIO) exec deploy/curl -- curl -s 'zipkin.istio-system:9411/api/v2/traces?limit=1'   # a trace"
	@echo "  $(PISTIO) down                                                      # remove it all"

clean:
	rm -rf $(VENV) *.egg-info
