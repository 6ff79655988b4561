"""The file-backed config store: loading, last-good-version on invalid changes, deletions,
parse failures, and the watch loop. Real files in a temporary directory."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from pistio.pilot.config_store import ConfigStore, StoreKey

VS_REVIEWS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
      weight: {weight}
"""

DR_REVIEWS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: ratings
  namespace: bookinfo
spec:
  selector: {app: ratings}
  ports:
  - name: http
    port: 9080
"""

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
"""

VS_KEY = StoreKey("networking.istio.io", "VirtualService", "default", "reviews")
DR_KEY = StoreKey("networking.istio.io", "DestinationRule", "default", "reviews")
SVC_KEY = StoreKey("", "Service", "bookinfo", "ratings")
NS_KEY = StoreKey("", "Namespace", "", "bookinfo")


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # Push the mtime out of the "racy" window too, so the stamp check alone sees the change.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def vs(subset: str = "v1", weight: int = 100) -> str:
    return VS_REVIEWS.format(subset=subset, weight=weight)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    write(tmp_path / "reviews.yaml", vs() + "---" + DR_REVIEWS)
    write(tmp_path / "kube.yaml", NAMESPACE + "---" + SERVICE)
    return tmp_path


def test_load_keys_every_valid_resource(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    changed = store.reload()
    assert changed == {VS_KEY, DR_KEY, SVC_KEY, NS_KEY}
    assert len(store) == 4
    # Namespaced resources without a namespace are in "default"; cluster-scoped have none.
    assert store.get(DR_KEY) is not None and store.get(DR_KEY).namespace is None
    assert store.get(NS_KEY).name == "bookinfo"
    assert store.file_of(VS_KEY) == str(config_dir / "reviews.yaml")
    assert store.get(VS_KEY).spec.http[0].route[0].destination.subset == "v1"
    # Nothing changed on disk: nothing to report.
    assert store.reload() == frozenset()


def test_changed_resource_is_reported_alone(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    write(config_dir / "reviews.yaml", vs(subset="v2") + "---" + DR_REVIEWS)
    assert store.reload() == {VS_KEY}
    assert store.get(VS_KEY).spec.http[0].route[0].destination.subset == "v2"


def test_quick_rewrite_with_same_stamp_is_seen(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    path = config_dir / "reviews.yaml"
    st = path.stat()
    # Same size, same mtime: only the content differs (a rewrite within one clock tick).
    path.write_text(vs(subset="v2") + "---" + DR_REVIEWS)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.reload() == {VS_KEY}


def test_invalid_change_keeps_last_good_version_and_counts(
    config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    caplog.set_level(logging.ERROR, logger="pistio.config")
    write(config_dir / "reviews.yaml", vs(subset="v2", weight=-1) + "---" + DR_REVIEWS)
    assert store.reload() == frozenset()
    kept = store.get(VS_KEY)
    assert kept is not None
    assert kept.spec.http[0].route[0].destination.subset == "v1"
    assert kept.spec.http[0].route[0].weight == 100
    assert store.stats.rejected["VirtualService"] == 1
    assert (
        store.stats.validation_failed[
            ("networking.istio.io", "v1", "virtualservices", "invalid_resource")
        ]
        == 1
    )
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "VirtualService default/reviews" in message
    assert f"{config_dir / 'reviews.yaml'}:2" in message  # file and line of the resource
    assert "spec.http[0].route[0].weight" in message
    assert "previous version stays in force" in message

    # Fixed again: the new version replaces the kept one.
    write(config_dir / "reviews.yaml", vs(subset="v2", weight=100) + "---" + DR_REVIEWS)
    assert store.reload() == {VS_KEY}
    assert store.get(VS_KEY).spec.http[0].route[0].destination.subset == "v2"


def test_invalid_new_resource_is_not_added(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    bad = vs(weight=-5).replace("name: reviews", "name: ratings")
    write(config_dir / "ratings.yaml", bad)
    assert store.reload() == frozenset()
    assert (
        store.get(StoreKey("networking.istio.io", "VirtualService", "default", "ratings")) is None
    )
    assert store.stats.rejected["VirtualService"] == 1


def test_unknown_kind_is_rejected_and_counted(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    write(
        config_dir / "odd.yaml",
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g}\n",
    )
    assert store.reload() == frozenset()
    assert store.stats.rejected["Gadget"] == 1
    assert store.stats.validation_failed[("example.com", "v1", "", "unknown_kind")] == 1


def test_deleting_a_file_removes_its_resources(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    (config_dir / "reviews.yaml").unlink()
    assert store.reload() == {VS_KEY, DR_KEY}
    assert store.get(VS_KEY) is None and store.get(DR_KEY) is None
    assert store.get(SVC_KEY) is not None


def test_removing_a_document_removes_that_resource(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    write(config_dir / "reviews.yaml", vs())
    assert store.reload() == {DR_KEY}
    assert store.get(DR_KEY) is None and store.get(VS_KEY) is not None


def test_parse_failure_keeps_everything_from_that_file(
    config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    caplog.set_level(logging.ERROR, logger="pistio.config")
    write(config_dir / "reviews.yaml", vs(subset="v3") + "---\nkind: [unclosed\n")
    assert store.reload() == frozenset()
    assert store.get(VS_KEY).spec.http[0].route[0].destination.subset == "v1"
    assert store.get(DR_KEY) is not None
    assert store.stats.parse_errors == 1
    assert any(
        "cannot parse" in r.getMessage() and "keeping the 2 resource(s)" in r.getMessage()
        for r in caplog.records
    )


def test_resource_moved_between_files_stays(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    write(config_dir / "reviews.yaml", vs())
    write(config_dir / "zz-dr.yaml", DR_REVIEWS)
    store.reload()
    assert store.get(DR_KEY) is not None
    assert store.file_of(DR_KEY) == str(config_dir / "zz-dr.yaml")


def test_subdirectories_are_read(config_dir: Path) -> None:
    sub = config_dir / "istio"
    sub.mkdir()
    write(sub / "ratings-vs.yaml", vs().replace("name: reviews", "name: ratings"))
    store = ConfigStore(config_dir)
    store.reload()
    assert store.get(StoreKey("networking.istio.io", "VirtualService", "default", "ratings"))


def test_missing_root_keeps_config(tmp_path: Path, config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    config_dir.rename(moved)
    try:
        assert store.reload() == frozenset()
        assert len(store) == 4
    finally:
        moved.rename(config_dir)


@pytest.mark.asyncio
async def test_watch_reports_changes(config_dir: Path) -> None:
    store = ConfigStore(config_dir)
    store.reload()
    seen: asyncio.Queue[frozenset[StoreKey]] = asyncio.Queue()
    task = asyncio.create_task(store.watch(seen.put_nowait, interval=0.05))
    try:
        write(config_dir / "reviews.yaml", vs(subset="v2") + "---" + DR_REVIEWS)
        assert await asyncio.wait_for(seen.get(), 2.0) == {VS_KEY}
        (config_dir / "kube.yaml").unlink()
        assert await asyncio.wait_for(seen.get(), 2.0) == {SVC_KEY, NS_KEY}
    finally:
        task.cancel()
