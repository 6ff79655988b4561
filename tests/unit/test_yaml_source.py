"""Reading YAML/JSON: documents, lines, and a clear error for every bad shape."""

from __future__ import annotations

import pytest

from pistio.config.loader import read_text
from pistio.config.yaml_source import MAX_DEPTH, SourceError, parse_text


def test_multi_document_with_lines() -> None:
    text = "a: 1\n---\n\n---\nkind: X\nspec:\n  http:\n  - route:\n    - weight: 5\n"
    docs = list(parse_text(text))
    assert [d.data for d in docs] == [
        {"a": 1},
        {"kind": "X", "spec": {"http": [{"route": [{"weight": 5}]}]}},
    ]
    assert docs[1].line == 5
    assert docs[1].lines["spec.http[0].route[0].weight"] == 9
    assert docs[1].lines["spec.http[0]"] == 8


def test_json_input() -> None:
    docs = list(parse_text('{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}'))
    assert docs[0].data["metadata"]["name"] == "x"


def test_kubernetes_reading_of_scalars() -> None:
    (doc,) = parse_text("t: 2001-12-14\nn: 12\nk: {80: a}\n")
    assert doc.data == {"t": "2001-12-14", "n": 12, "k": {"80": "a"}}


@pytest.mark.parametrize(
    ("text", "reason", "line"),
    [
        ("a: 1\na: 2\n", 'duplicate key "a"', 2),
        ("a: [1, 2\n", "invalid YAML", None),
        ("a:\n\tb: 1\n", "invalid YAML", 2),
        ("? [a]\n: 1\n", "mapping key must be a string", 1),
        ("a: !!binary aGk=\n", "invalid YAML", None),
        ("a: !!python/object:os.system x\n", "invalid YAML", None),
    ],
)
def test_bad_yaml(text: str, reason: str, line: int | None) -> None:
    with pytest.raises(SourceError) as exc:
        list(parse_text(text))
    assert reason in exc.value.message
    if line is not None:
        assert exc.value.line == line


def test_binary_and_non_utf8() -> None:
    with pytest.raises(SourceError, match="binary"):
        list(parse_text(b"\x00\x01\x02kind: x"))
    with pytest.raises(SourceError, match="not UTF-8"):
        list(parse_text(b"a: \xff\xfe\n"))


def test_deep_nesting_is_refused_without_recursion() -> None:
    text = "[" * 100_000 + "]" * 100_000
    with pytest.raises(SourceError, match="nest"):
        list(parse_text(text))
    block = "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * 200 + "x\n"
    with pytest.raises(SourceError, match="deeper"):
        list(parse_text(block))


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(SourceError, match="more than"):
        list(parse_text("\n".join(lines) + "\n"))


def test_huge_input_is_refused() -> None:
    with pytest.raises(SourceError, match="larger than"):
        list(parse_text(b"a: " + b"x" * (33 * 1024 * 1024)))


def test_non_mapping_documents_are_reported() -> None:
    docs, issues = read_text("- a\n- b\n---\nkind: Namespace\n", "f.yaml")
    assert len(docs) == 1
    assert issues[0].line == 1
    assert "must be a mapping" in issues[0].message


def test_list_kind_is_unpacked_with_lines() -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: a\n"
        "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: b\n"
    )
    docs, issues = read_text(text, "l.yaml")
    assert issues == []
    assert [d.name for d in docs] == ["a", "b"]
    assert docs[1].source.line == 8
    assert docs[1].line_of("metadata.name") == 11
