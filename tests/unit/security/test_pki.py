import pytest

from pistio.security.pki import format_duration, parse_duration


@pytest.mark.parametrize("text,seconds", [("24h", 86400), ("1h30m", 5400), ("90s", 90),
                                          ("500ms", 0.5), ("2160h", 2160 * 3600), ("4", 4)])
def test_parse_go_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_rejects_garbage():
    with pytest.raises(ValueError):
        parse_duration("1 day")


@pytest.mark.parametrize("seconds,text", [(86400, "24h0m0s"), (3 * 3600, "3h0m0s"),
                                          (90, "1m30s"), (4, "4s"), (1.5, "1.5s"),
                                          (0.5, "500ms")])
def test_format_like_go(seconds, text):
    assert format_duration(seconds) == text
