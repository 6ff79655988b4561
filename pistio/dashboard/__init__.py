"""``pistio dashboard``: a live service graph and proxy sync list, in the spirit of Kiali.

The graph is Kiali's versioned app graph: workloads (app + version), the services they call,
and an ``unknown`` node for traffic from outside the mesh, with edges labelled by request
rate, 5xx ratio, p99 latency and a padlock for mutual TLS. Its numbers come from Istio's
standard metrics, either through Kiali's PromQL against a Prometheus or, without one, by
scraping every sidecar's ``:15090/stats/prometheus`` and evaluating the same queries locally.

Modules: :mod:`promql` (the queries, as text and as a local evaluator), :mod:`histogram`
(Prometheus's ``histogram_quantile``), :mod:`sample_window` (counter deltas over a window),
:mod:`scrape_source` and :mod:`prometheus_source` (where the vectors come from), :mod:`graph`
(vectors → nodes and edges), :mod:`proxies` (``/debug/syncz`` → the proxy list),
:mod:`server` (HTTP: the page and ``/api/*``).
"""
