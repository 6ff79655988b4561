"""Pods of the local runtime: containers' environment and command line as the kubelet builds
them (:mod:`.env`), Istio's injection (:mod:`.inject`), probes (:mod:`.probes`), container
processes (:mod:`.process`) and the supervisor that runs, restarts and probes them
(:mod:`.supervisor`)."""
