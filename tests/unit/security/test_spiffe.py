import pytest

from pistio.security.spiffe import SpiffeId, parse, spiffe_id


def test_spiffe_id_and_parse_round_trip():
    uri = spiffe_id("default", "bookinfo-reviews")
    assert uri == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert parse(uri) == SpiffeId("cluster.local", "default", "bookinfo-reviews")
    assert str(parse(uri)) == uri
    assert spiffe_id("a", "b", "example.org") == "spiffe://example.org/ns/a/sa/b"


@pytest.mark.parametrize("bad", ["http://cluster.local/ns/a/sa/b", "spiffe://td/ns/a",
                                 "spiffe://td/ns/a/sa/", "spiffe://td/xx/a/sa/b"])
def test_parse_rejects_non_istio_ids(bad):
    with pytest.raises(ValueError, match="identity is not a spiffe format"):
        parse(bad)
