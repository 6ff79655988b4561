"""Token buckets shared by a proxy's processes: one bucket per key, whichever process takes."""

from __future__ import annotations

import os
import subprocess
import sys

from pistio.proxy.config.local_rate_limit import TokenBucket
from pistio.proxy.runtime import shared_buckets
from pistio.proxy.runtime.shared_buckets import SharedBuckets, bucket_key

TAKE_THREE = """
import sys
from pistio.proxy.runtime import shared_buckets
shared_buckets.install_from_env()
b = shared_buckets.current
print([b.take(int(sys.argv[1]), 5, 5, 60.0)[0] for _ in range(3)])
"""


def test_processes_draw_from_one_bucket() -> None:
    table = SharedBuckets.create()
    key = bucket_key(b"listener[0] envoy.filters.http.local_ratelimit", b"config")
    try:
        assert table.take(key, 5, 5, 60.0)[:2] == (True, 4)
        child = subprocess.run(
            [sys.executable, "-c", TAKE_THREE, str(key)], pass_fds=(table.fd,),
            env={**os.environ, shared_buckets.ENV: str(table.fd)},
            capture_output=True, text=True, timeout=60, check=True)
        assert child.stdout.strip() == "[True, True, True]"
        assert table.take(key, 5, 5, 60.0)[:2] == (True, 0)  # 1 + 3 + 1 of 5
        assert table.take(key, 5, 5, 60.0)[:2] == (False, 0)
        assert table.take(bucket_key(b"another"), 5, 5, 60.0)[:2] == (True, 4)  # its own bucket
    finally:
        table.close()


def test_a_token_bucket_with_a_key_uses_the_installed_table() -> None:
    table = SharedBuckets.create()
    shared_buckets.install(table)
    try:
        a, b = TokenBucket(2, 2, 60.0, key=7), TokenBucket(2, 2, 60.0, key=7)
        b.last_fill -= 100  # stale local state: the table's fill time is what counts
        assert [a.consume(), b.consume(), a.consume()] == [True, True, False]
        assert a.tokens == 0 and b.last_fill == a.last_fill
        assert 59 <= b.seconds_to_fill() <= 60  # x-ratelimit-reset from the shared bucket
        local = TokenBucket(1, 1, 60.0)  # no key (per connection): its own tokens
        assert [local.consume(), local.consume()] == [True, False]
    finally:
        shared_buckets.install(None)
        table.close()
