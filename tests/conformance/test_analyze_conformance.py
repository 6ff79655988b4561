"""Istio's analyzer test cases (../shared/conformance/analyze) run through ``pistio analyze``.

Each case runs only its analyzer, with the stand-in ingress Service and Pod added unless the
mesh config turns the ingress controller off, and passes when the reported (code, origin)
pairs equal the expected ones as a multiset. The suite fails below a 90% pass rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.shared_data import shared_dir

pytestmark = pytest.mark.conformance

DATA = Path(__file__).parent / "data"
STANDIN = DATA / "ingress-standin.yaml"
REQUIRED_PASS_RATE = 0.90


def analyze_dir() -> Path:
    d = shared_dir() / "conformance" / "analyze"
    if not (d / "cases.json").is_file():
        pytest.fail(
            f"analyzer conformance data not found at {d} "
            "(expected ../shared beside the repository, or set PISTIO_SHARED)"
        )
    return d


def _ingress_off(mesh_file: Path | None) -> bool:
    if mesh_file is None:
        return False
    doc = yaml.safe_load(mesh_file.read_text()) or {}
    return str(doc.get("ingressControllerMode", "")).upper() in ("OFF", "0")


def run_case(case: dict, base: Path) -> tuple[bool, Counter, Counter, str]:
    """(passed, expected, got, stderr) for one case."""
    testdata = base / "testdata"
    mesh = testdata / case["meshConfigFile"] if case.get("meshConfigFile") else None
    networks = testdata / case["meshNetworksFile"] if case.get("meshNetworksFile") else None
    cmd = [
        sys.executable,
        "-c",
        "from pistio.cli.main import main; main()",
        "analyze",
        "--analyzer",
        case["analyzerName"],
        "-o",
        "json",
    ]
    if mesh:
        cmd += ["--meshConfigFile", str(mesh)]
    if networks:
        cmd += ["--meshNetworksFile", str(networks)]
    if not _ingress_off(mesh):
        cmd.append(str(STANDIN))
    cmd += [str(testdata / f) for f in case["inputFiles"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    expected = Counter((e["code"], e["origin"]) for e in case["expected"])
    try:
        messages = json.loads(proc.stdout or "[]")
    except ValueError:
        return False, expected, Counter(), f"rc={proc.returncode} {proc.stdout[:500]} {proc.stderr}"
    got = Counter((m["code"], m.get("origin", "")) for m in messages)
    ok = proc.returncode in (0, 79) and got == expected
    return ok, expected, got, proc.stderr


def run_all(base: Path) -> list[tuple[dict, bool, Counter, Counter, str]]:
    cases = json.loads((base / "cases.json").read_text())
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: run_case(c, base), cases))
    return [(c, *r) for c, r in zip(cases, results, strict=True)]


def test_analyzer_conformance() -> None:
    base = analyze_dir()
    results = run_all(base)
    failed = [r for r in results if not r[1]]
    for case, _, expected, got, err in failed:
        print(f"FAIL {case['id']} [{case['analyzerName']}]")
        for key in sorted((expected - got).elements()):
            print(f"    missing    {key}")
        for key in sorted((got - expected).elements()):
            print(f"    unexpected {key}")
        if err.strip() and "Analyzers found issues" not in err:
            print(f"    stderr: {err.strip()[:300]}")
    rate = (len(results) - len(failed)) / len(results)
    print(f"analyzer conformance: {len(results) - len(failed)}/{len(results)} passed ({rate:.1%})")
    assert rate >= REQUIRED_PASS_RATE, f"pass rate {rate:.1%} below {REQUIRED_PASS_RATE:.0%}"
