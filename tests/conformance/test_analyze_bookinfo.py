"""``pistio analyze`` on Istio's Bookinfo networking samples reports what istioctl would.

Each sample file is analyzed as a user would apply it: with Bookinfo's Services and Deployments
(``data/bookinfo-services.yaml``), Istio's ingress gateway (``data/istio-ingressgateway.yaml``),
the Bookinfo gateway and ``destination-rule-all.yaml``. The only errors are the real ones:
the ``ratings`` subsets for MySQL versions that the basic Bookinfo does not deploy, and the
cert-manager solver Service the cert-manager sample expects to exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.shared_data import bookinfo_samples, shared_dir

DATA = Path(__file__).parent / "data"
MYSQL_SUBSETS = Counter({("IST0173", "DestinationRule ratings"): 2})
EXTRA_ERRORS = {
    "destination-rule-all-mtls.yaml": Counter({("IST0173", "DestinationRule ratings"): 2}),
    "certmanager-gateway.yaml": Counter(
        {("IST0101", "VirtualService istio-system/cert-manager"): 1}
    ),
}


def samples() -> Path:
    return bookinfo_samples()


def analyze(*paths: Path) -> tuple[int, list[dict]]:
    cmd = [
        sys.executable,
        "-c",
        "from pistio.cli.main import main; main()",
        "analyze",
        "-o",
        "json",
    ]
    proc = subprocess.run(
        cmd + [str(p) for p in paths], capture_output=True, text=True, timeout=120
    )
    return proc.returncode, json.loads(proc.stdout or "[]")


def test_bookinfo_samples_present() -> None:
    assert list(samples().glob("*.yaml")), "no Bookinfo samples to analyze"


def test_bookinfo_services_alone_are_clean() -> None:
    rc, messages = analyze(DATA / "bookinfo-services.yaml", DATA / "istio-ingressgateway.yaml")
    assert rc == 0, messages
    assert messages == []


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in (shared_dir() / "conformance/istio-samples/bookinfo-networking").glob("*.yaml")
    ),
)
def test_bookinfo_sample(name: str) -> None:
    d = samples()
    base = [
        DATA / "bookinfo-services.yaml",
        DATA / "istio-ingressgateway.yaml",
        d / "bookinfo-gateway.yaml",
        d / "destination-rule-all.yaml",
    ]
    inputs = base if (d / name) in base else [*base, d / name]
    rc, messages = analyze(*inputs)
    errors = Counter((m["code"], m["origin"]) for m in messages if m["level"] == "Error")
    assert errors == MYSQL_SUBSETS + EXTRA_ERRORS.get(name, Counter()), messages
    assert not [m for m in messages if m["code"] in ("IST0106", "IST0001")]
    assert rc == 79
