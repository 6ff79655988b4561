"""Per-worker load balancers: Envoy's round robin, least request, random, ring hash, maglev
and original destination, over priorities and localities.

Choosing a host is two steps, as in Envoy:

1. **Priority.** Each priority's load share comes from its health (see
   ``pistio.proxy.config.endpoints.priority_load``); a number in [0, 100) — the request hash
   for hash-based policies, else random — walks the cumulative shares. A priority whose
   healthy share drops below ``healthy_panic_threshold`` percent (default 50) is in *panic*
   and balances over all its hosts, healthy or not, unless the priorities together are
   healthy enough (normalised availability 100). When every priority panics, load follows
   host counts.
2. **Host.** Within the priority (and, with locality-weighted balancing, within a locality
   chosen by weighted round robin on effective locality weights) the policy picks:

   - round robin: in order; with unequal weights an earliest-deadline-first schedule where a
     host of weight w comes up every 1/w time units (Envoy's weighted round robin);
   - least request: with equal weights, the least loaded of ``choice_count`` random hosts
     (power of two choices); with unequal weights, EDF on ``weight / (active + 1) ^ bias``;
   - random: uniformly;
   - ring hash / maglev: by the request hash (random without one);
   - original destination: the host is the connection's original destination address.

Hosts excluded from balancing (Envoy's ``PENDING_ACTIVE_HC``: not yet health checked, with
``ignore_new_hosts_until_first_hc``) count nowhere: neither in priority health nor in panic.
With active health checking, a host that leaves discovery while passing its checks stays
(``PENDING_DYNAMIC_REMOVAL``) until it fails one, unless ``ignore_health_on_host_removal``.

All state is rebuilt in ``refresh()`` when a host's health changes (outlier ejection, EDS,
active health checks);
``choose_host`` only reads it. ``exclude`` (the retry ``previous_hosts`` predicate) makes the
policy pick again, up to as many times as there are hosts; if it keeps landing on excluded
hosts, the first non-excluded host in order is used.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Container, Sequence

from pistio.proxy.config.cluster_config import LbPolicy, LbSettings
from pistio.proxy.config.endpoints import (
    EndpointConfig,
    LoadAssignment,
    PriorityLoad,
    availability,
    choose_priority,
    effective_locality_weights,
    priority_load,
    total_panic_load,
)
from pistio.proxy.upstream.host import NOT_WARMING, Host, build_hosts, hosts_by_key
from pistio.proxy.upstream.maglev import MaglevTable
from pistio.proxy.upstream.ring_hash import RingHash

WeightFn = Callable[[Host], float]


class EdfScheduler:
    """Earliest-deadline-first scheduling over weighted items (Envoy's weighted RR).

    Every item has a deadline; picking pops the earliest (ties: first added) and re-queues
    the item ``1 / weight`` later. With static weights the n-th deadline of an item is
    computed as ``n / weight`` rather than accumulated, so equal rationals compare equal and
    the schedule is exactly periodic (no floating-point drift). With ``dynamic`` weights
    (least request, slow start) ``weight_of`` is re-read at each re-queue and the next
    deadline is ``now + 1 / weight``.
    """

    __slots__ = ("_heap", "_order", "_weight_of", "_dynamic")

    def __init__(
        self, items: Sequence, weight_of: Callable[[object], float], dynamic: bool = False
    ) -> None:
        self._weight_of = weight_of
        self._dynamic = dynamic
        self._heap: list = []
        self._order = 0
        for item in items:
            w = weight_of(item)
            if w > 0:
                self._heap.append((1.0 / w, self._order, item, 1, w))
                self._order += 1
        heapq.heapify(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def pick(self):
        deadline, _, item, n, w = self._heap[0]
        self._order += 1
        if self._dynamic:
            w = self._weight_of(item)
            # A weight that fell to 0 keeps the item at the back of the queue instead of
            # dropping it: dynamic weights here are never 0 for long (slow start has a floor).
            nxt = deadline + (1.0 / w if w > 0 else 1e9)
        else:
            nxt = (n + 1) / w
        heapq.heapreplace(self._heap, (nxt, self._order, item, n + 1, w))
        return item


# --- per-policy pickers over one host list ---------------------------------------------------


class _Picker:
    __slots__ = ("hosts",)

    def __init__(self, hosts: tuple[Host, ...]) -> None:
        self.hosts = hosts

    def pick(self, hash_key: int | None) -> Host:  # pragma: no cover - interface
        raise NotImplementedError


class _RoundRobin(_Picker):
    __slots__ = ("_next", "_edf")

    def __init__(
        self, hosts: tuple[Host, ...], rng: random.Random, weight_of: WeightFn | None
    ) -> None:
        super().__init__(hosts)
        self._edf = None
        if weight_of is not None or len({h.weight for h in hosts}) > 1:
            self._edf = EdfScheduler(hosts, weight_of or _static_weight, weight_of is not None)
            # Start each worker at a different point of the schedule, as Envoy does, so
            # workers do not all send their first request to the same host.
            for _ in range(rng.randrange(len(hosts))):
                self._edf.pick()
        self._next = rng.randrange(len(hosts))

    def pick(self, hash_key: int | None) -> Host:
        if self._edf is not None:
            return self._edf.pick()
        i = self._next
        self._next = i + 1 if i + 1 < len(self.hosts) else 0
        return self.hosts[i]


class _LeastRequest(_Picker):
    __slots__ = ("_rng", "_choices", "_edf")

    def __init__(
        self,
        hosts: tuple[Host, ...],
        rng: random.Random,
        choice_count: int,
        bias: float,
        weight_of: WeightFn | None,
    ) -> None:
        super().__init__(hosts)
        self._rng = rng
        self._choices = choice_count
        self._edf = None
        if weight_of is not None or len({h.weight for h in hosts}) > 1:
            base = weight_of or _static_weight

            def dynamic(h: Host) -> float:
                w = base(h)
                if bias == 1.0:
                    return w / (h.active_requests + 1)
                if bias == 0.0:
                    return w
                return w / (h.active_requests + 1) ** bias

            self._edf = EdfScheduler(hosts, dynamic, True)

    def pick(self, hash_key: int | None) -> Host:
        if self._edf is not None:
            return self._edf.pick()
        hosts = self.hosts
        n = len(hosts)
        if n == 1:
            return hosts[0]
        rand = self._rng.randrange
        best = hosts[rand(n)]
        for _ in range(self._choices - 1):
            candidate = hosts[rand(n)]
            if candidate.active_requests < best.active_requests:
                best = candidate
        return best


class _Random(_Picker):
    __slots__ = ("_rng",)

    def __init__(self, hosts: tuple[Host, ...], rng: random.Random) -> None:
        super().__init__(hosts)
        self._rng = rng

    def pick(self, hash_key: int | None) -> Host:
        return self.hosts[self._rng.randrange(len(self.hosts))]


class _Hashed(_Picker):
    """Ring hash or maglev; without a request hash a random 64-bit value is used."""

    __slots__ = ("_structure", "_rng")

    def __init__(
        self, hosts: tuple[Host, ...], structure: RingHash | MaglevTable, rng: random.Random
    ) -> None:
        super().__init__(hosts)
        self._structure = structure
        self._rng = rng

    def pick(self, hash_key: int | None) -> Host:
        if hash_key is None:
            hash_key = self._rng.getrandbits(64)
        return self._structure.pick(hash_key)


def _static_weight(h: Host) -> float:
    return h.weight


# --- the load balancer -----------------------------------------------------------------------


class _PriorityState:
    """Everything ``choose_host`` needs for one priority, rebuilt by ``refresh()``."""

    __slots__ = ("hosts", "healthy", "degraded", "panic", "healthy_picker",
                 "degraded_picker", "all_picker", "locality_edf", "locality_pickers")

    def __init__(self) -> None:
        self.hosts: tuple[Host, ...] = ()
        self.healthy: tuple[Host, ...] = ()
        self.degraded: tuple[Host, ...] = ()
        self.panic = False
        self.healthy_picker: _Picker | None = None
        self.degraded_picker: _Picker | None = None
        self.all_picker: _Picker | None = None
        self.locality_edf: EdfScheduler | None = None
        self.locality_pickers: list[_Picker | None] = []


class LoadBalancer:
    """One cluster's load balancer on one worker.

    Build it from the compiled ``LbSettings`` and a ``LoadAssignment``; call ``update()`` on
    EDS changes (runtime host state carries over by ``ip:port``) and ``refresh()`` after
    health changes (the outlier detector does this).
    """

    def __init__(
        self,
        settings: LbSettings,
        assignment: LoadAssignment,
        rng: random.Random | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._now = now
        self._original_dst_hosts: dict[tuple[str, int], Host] = {}
        self.assignment = assignment
        self.host_groups = build_hosts(assignment)
        self.hosts: tuple[Host, ...] = tuple(
            h for groups in self.host_groups for g in groups for h in g
        )
        self.load = PriorityLoad((100,), (0,))
        self._states: list[_PriorityState] = []
        # One priority taking all the load, not in panic, no locality weighting: every
        # request goes to that priority's healthy picker (no roll, no priority walk).
        self._single = False
        self._single_picker: _Picker | None = None
        self.refresh()

    # -- config and health changes --

    def update(
        self, assignment: LoadAssignment, keep: Callable[[Host], bool] | None = None
    ) -> None:
        """Apply a new EDS assignment, keeping ejection and counters of known hosts; hosts
        that are new start their slow-start window now.

        ``keep``: for a host the assignment no longer has, whether it stays (flagged
        ``pending_removal``) in its priority and locality, as Envoy keeps hosts that still pass
        active health checks. A host whose priority or locality is gone is removed anyway."""
        self.assignment = assignment
        groups = build_hosts(assignment, hosts_by_key(self.hosts), self._now())
        if keep is not None:
            groups = self._retain(groups, keep)
        self.host_groups = groups
        self.hosts = tuple(h for groups in self.host_groups for g in groups for h in g)
        self.refresh()

    def _retain(
        self, groups: tuple[tuple[tuple[Host, ...], ...], ...], keep: Callable[[Host], bool]
    ) -> tuple[tuple[tuple[Host, ...], ...], ...]:
        present = {h for p in groups for g in p for h in g}
        gone = [h for h in self.hosts if h not in present and keep(h)]
        if not gone:
            return groups
        out = [list(map(list, p)) for p in groups]
        for host in gone:
            if host.priority >= len(out):
                continue
            localities = self.assignment.priorities[host.priority].localities
            locality = host.config.locality
            for index, group in enumerate(localities):
                if group.locality == locality:
                    host.pending_removal = True
                    host.locality_index = index
                    out[host.priority][index].append(host)
                    break
        return tuple(tuple(tuple(g) for g in p) for p in out)

    def remove_hosts(self, hosts: Container[Host]) -> None:
        """Drop hosts (pending removal ones that failed their health check)."""
        self.host_groups = tuple(
            tuple(tuple(h for h in g if h not in hosts) for g in p) for p in self.host_groups
        )
        self.hosts = tuple(h for groups in self.host_groups for g in groups for h in g)
        self.refresh()

    def refresh(self) -> None:
        """Recompute healthy sets, priority loads, panic flags and pickers."""
        s = self.settings
        factor = self.assignment.overprovisioning_factor
        states = []
        health: list[int] = []
        degraded_scores: list[int] = []
        for groups in self.host_groups:
            st = _PriorityState()
            st.hosts = tuple(h for g in groups for h in g if not h.hc_pending)
            st.healthy = tuple(h for h in st.hosts if h.healthy)
            st.degraded = tuple(h for h in st.hosts if h.degraded)
            if self.assignment.weighted_priority_health:
                total = sum(h.weight for h in st.hosts)
                health.append(availability(sum(h.weight for h in st.healthy), total, factor))
                degraded_scores.append(
                    availability(sum(h.weight for h in st.degraded), total, factor)
                )
            else:
                health.append(availability(len(st.healthy), len(st.hosts), factor))
                degraded_scores.append(availability(len(st.degraded), len(st.hosts), factor))
            states.append(st)
        if not states:
            states.append(_PriorityState())
            health, degraded_scores = [0], [0]

        normalized = min(100, sum(health) + sum(degraded_scores))
        load = priority_load(health, degraded_scores)
        threshold = min(100.0, s.healthy_panic_threshold)
        if threshold > 0 and normalized < 100:
            for st in states:
                st.panic = _in_panic(st, threshold)
            if all(st.panic for st in states):
                load = total_panic_load([len(st.hosts) for st in states])
        self.load = load

        for i, st in enumerate(states):
            groups = self.host_groups[i] if i < len(self.host_groups) else ()
            st.healthy_picker = self._picker(st.healthy)
            st.degraded_picker = self._picker(st.degraded)
            st.all_picker = self._picker(st.hosts)
            if s.locality_weighted and len(groups) > 1:
                healthy_counts = [sum(1 for h in g if h.healthy) for g in groups]
                weights = effective_locality_weights(
                    self.assignment.priorities[i].localities, healthy_counts, factor
                )
                live = [j for j, w in enumerate(weights) if w > 0]
                if live:
                    st.locality_edf = EdfScheduler(live, weights.__getitem__)
                    st.locality_pickers = [
                        self._picker(tuple(h for h in g if h.healthy)) for g in groups
                    ]
        self._states = states
        first = states[0]
        self._single = (len(states) == 1 and not first.panic and first.locality_edf is None
                        and load.healthy[0] >= 100
                        and s.policy is not LbPolicy.CLUSTER_PROVIDED)
        self._single_picker = first.healthy_picker

    def _picker(self, hosts: tuple[Host, ...]) -> _Picker | None:
        if not hosts:
            return None
        s = self.settings
        weight_of = self._slow_start_weight if s.slow_start is not None else None
        if weight_of is not None and all(h.created_at == NOT_WARMING for h in hosts):
            weight_of = None
        policy = s.policy
        if policy is LbPolicy.ROUND_ROBIN:
            return _RoundRobin(hosts, self._rng, weight_of)
        if policy is LbPolicy.LEAST_REQUEST:
            return _LeastRequest(hosts, self._rng, s.choice_count, s.active_request_bias,
                                 weight_of)
        if policy is LbPolicy.RANDOM:
            return _Random(hosts, self._rng)
        if policy is LbPolicy.RING_HASH:
            return _Hashed(hosts, RingHash(hosts, s.min_ring_size, s.max_ring_size), self._rng)
        if policy is LbPolicy.MAGLEV:
            return _Hashed(hosts, MaglevTable(hosts, s.maglev_table_size), self._rng)
        return None  # CLUSTER_PROVIDED: hosts come from the connection

    def _slow_start_weight(self, h: Host) -> float:
        """Envoy's slow start: a new host's weight is scaled by
        ``max(min_weight_percent, (age / window) ^ (1 / aggression))`` until the window ends."""
        cfg = self.settings.slow_start
        assert cfg is not None
        age = self._now() - h.created_at
        if age >= cfg.window or cfg.window <= 0:
            return h.weight
        factor = (max(age, 0.0) / cfg.window) ** (1.0 / cfg.aggression)
        return h.weight * max(cfg.min_weight_percent / 100.0, factor)

    # -- the request path --

    def choose_host(
        self,
        hash_key: int | None = None,
        exclude: Container[Host] | None = None,
        original_dst: tuple[str, int] | None = None,
    ) -> Host | None:
        """The host for one request (or TCP connection); ``None`` when no host is available
        (the router answers 503 with flag UH)."""
        if self._single:
            picker = self._single_picker
            if picker is None:
                return None
            host = picker.pick(hash_key)
            if exclude and host in exclude:
                return self._pick_excluding(picker, hash_key, exclude, host)
            return host
        if self.settings.policy is LbPolicy.CLUSTER_PROVIDED:
            return self._original_dst_host(original_dst)
        roll = hash_key % 100 if hash_key is not None else self._rng.randrange(100)
        priority, degraded = choose_priority(self.load, roll)
        st = self._states[priority]
        if st.panic:
            picker = st.all_picker
        elif degraded:
            picker = st.degraded_picker
        elif st.locality_edf is not None:
            picker = st.locality_pickers[st.locality_edf.pick()]
        else:
            picker = st.healthy_picker
        if picker is None:
            return None
        host = picker.pick(hash_key)
        if exclude and host in exclude:
            return self._pick_excluding(picker, hash_key, exclude, host)
        return host

    def _pick_excluding(
        self, picker: _Picker, hash_key: int | None, exclude: Container[Host], host: Host
    ) -> Host:
        # A hash-based picker would return the same host again for the same key; Envoy
        # re-hashes, we walk the host list instead.
        if hash_key is None:
            for _ in range(len(picker.hosts)):
                host = picker.pick(None)
                if host not in exclude:
                    return host
        for candidate in picker.hosts:
            if candidate not in exclude:
                return candidate
        return host  # everything excluded: retry the same host rather than fail

    def _original_dst_host(self, original_dst: tuple[str, int] | None) -> Host | None:
        if original_dst is None:
            return None
        host = self._original_dst_hosts.get(original_dst)
        if host is None:
            host = Host(EndpointConfig(original_dst[0], original_dst[1]))
            self._original_dst_hosts[original_dst] = host
        host.created_at = self._now()  # last use, for cleanup
        return host

    def cleanup_original_dst_hosts(self, idle_for: float) -> int:
        """Drop ORIGINAL_DST hosts unused for ``idle_for`` seconds (Envoy's
        ``cleanup_interval``) that have no active requests or connections; returns how many."""
        cutoff = self._now() - idle_for
        stale = [
            k for k, h in self._original_dst_hosts.items()
            if h.created_at < cutoff and not h.active_requests and not h.active_connections
        ]
        for k in stale:
            del self._original_dst_hosts[k]
        return len(stale)

    @property
    def priority_states(self) -> Sequence[_PriorityState]:
        return self._states


def _in_panic(st: _PriorityState, threshold: float) -> bool:
    if not st.hosts:
        return True
    usable = len(st.healthy) + len(st.degraded)
    return 100.0 * usable / len(st.hosts) < threshold
