"""Data-driven validation cases: every file in validation_cases/ is a stream of cases.

A case is a mapping::

    case: weight below zero           # a short unique description
    expect:                           # every error, as (field path, reason); [] = valid
      - path: spec.http[0].route[0].weight
        message: weight -1 < 0
    warnings: [...]                   # optional: expected warnings, same shape
    resource: {apiVersion: ..., kind: ..., metadata: ..., spec: ...}

Errors must match exactly (as a multiset), so a case fails both when a rule is missing and
when a rule fires where it should not.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from pistio.api.registry import all_kinds
from pistio.config.resource import Document, Source
from pistio.config.validation import check_document

CASES_DIR = Path(__file__).parent / "validation_cases"


def _load_cases() -> list[tuple[str, dict]]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        for i, case in enumerate(yaml.safe_load_all(path.read_text())):
            if case is None:
                continue
            cases.append((f"{path.stem}[{i}] {case['case']}", case))
    return cases


CASES = _load_cases()


def _pairs(items: list[dict] | None) -> Counter:
    return Counter((e["path"], e["message"]) for e in items or [])


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[i for i, _ in CASES])
def test_case(case: dict) -> None:
    doc = Document(data=case["resource"], source=Source("case.yaml", 1))
    checked = check_document(doc)
    got = Counter((i.path, i.message) for i in checked.errors)
    assert got == _pairs(case["expect"]), f"{case['case']}: errors differ"
    if "warnings" in case:
        got_w = Counter((i.path, i.message) for i in checked.warnings)
        assert got_w == _pairs(case["warnings"]), f"{case['case']}: warnings differ"
    assert checked.valid == (not case["expect"])


def test_case_ids_are_unique() -> None:
    names = Counter(c["case"] for _, c in CASES)
    assert [n for n, k in names.items() if k > 1] == []


def test_at_least_150_invalid_cases() -> None:
    invalid = [c for _, c in CASES if c["expect"]]
    assert len(invalid) >= 150, f"only {len(invalid)} invalid cases"


def test_every_kind_has_valid_and_invalid_cases() -> None:
    seen_valid: set[str] = set()
    seen_invalid: set[str] = set()
    for _, c in CASES:
        kind = c["resource"].get("kind", "")
        (seen_invalid if c["expect"] else seen_valid).add(kind)
    kinds = {k.kind for k in all_kinds()}
    assert kinds, "no kinds registered"
    assert sorted(kinds - seen_valid) == [], "kinds without a valid case"
    assert sorted(kinds - seen_invalid) == [], "kinds without an invalid case"
