"""pistio: a service mesh in Python that implements Istio's architecture and APIs."""

__version__ = "0.1.0"
