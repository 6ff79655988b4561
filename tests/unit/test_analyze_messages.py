"""The message catalogue and Go-style message formatting."""

from __future__ import annotations

from pistio.config.analysis.messages import BY_CODE, TYPES, Message, go_format


def test_catalogue_has_istio_codes() -> None:
    assert TYPES["ReferencedResourceNotFound"].code == "IST0101"
    assert TYPES["SchemaValidationError"].code == "IST0106"
    assert BY_CODE["IST0132"].level == "Warning"
    assert len({t.code for t in TYPES.values()}) == len(TYPES)


def test_go_format_verbs() -> None:
    assert go_format("%s %q %d %v %%", ("a", "b", 3, ["x", "y"])) == 'a "b" 3 [x y] %'
    assert go_format("%q", (["a", "b"],)) == '["a" "b"]'
    assert go_format("%s %s", ("a",)) == "a %!s(MISSING)"


def test_message_text_form() -> None:
    m = Message(
        TYPES["ReferencedResourceNotFound"],
        ("host", "reviews"),
        origin="VirtualService default/reviews",
        file="f.yaml",
        line=12,
    )
    assert str(m) == (
        'Error [IST0101] (VirtualService default/reviews f.yaml:12) Referenced host not found: "reviews"'
    )
    assert m.to_dict()["documentationUrl"].endswith("/analysis/ist0101/")
