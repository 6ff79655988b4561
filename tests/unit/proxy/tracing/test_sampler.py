"""The connection manager's sampling decision."""

from __future__ import annotations

from pistio.proxy.tracing.sampler import Sampler, percent_to_numerator


def rid(prefix: int) -> dict[bytes, bytes]:
    return {b"x-request-id": b"%08x-0000-4000-8000-000000000000" % prefix}


def test_percent_to_numerator() -> None:
    assert percent_to_numerator(100.0) == 10000
    assert percent_to_numerator(1.0) == 100
    assert percent_to_numerator(0.01) == 1
    assert percent_to_numerator(0.0) == 0


def test_request_id_gives_a_stable_decision() -> None:
    s = Sampler(random_sampling=100)  # 1 %
    assert s.traced(rid(99)) is True  # 99 % 10000 < 100
    assert s.traced(rid(100)) is False
    assert s.traced(rid(10099)) is True  # 10099 % 10000 = 99
    # the same id decides alike every time (and in every proxy)
    assert len({s.traced(rid(12345)) for _ in range(20)}) == 1


def test_random_sampling_without_request_id() -> None:
    s = Sampler(random_sampling=5000, use_request_id=False)
    hits = sum(s.traced(rid(0)) for _ in range(4000))
    assert 1700 < hits < 2300
    assert Sampler(random_sampling=0).traced(rid(0)) is False
    assert Sampler(random_sampling=10000).traced({}) is True


def test_force_trace_and_client_trace_id() -> None:
    s = Sampler(random_sampling=0)
    assert s.traced({b"x-envoy-force-trace": b"true", **rid(5000)}) is True
    assert s.traced({b"x-client-trace-id": b"abc", **rid(5000)}) is True
    assert Sampler(random_sampling=0, client_sampling=0).traced(
        {b"x-client-trace-id": b"abc", **rid(5000)}) is False
    # overall sampling applies on top of every reason
    assert Sampler(overall_sampling=100).traced({b"x-envoy-force-trace": b"1", **rid(5000)}) \
        is False


def test_caller_decision_wins_but_force_trace_forces() -> None:
    s = Sampler(random_sampling=10000)
    assert s.sampled(rid(1), False) is False
    assert Sampler(random_sampling=0).sampled(rid(1), True) is True
    assert s.sampled(rid(1), None) is True
    assert Sampler(random_sampling=0).sampled({b"x-envoy-force-trace": b"1"}, False) is True
