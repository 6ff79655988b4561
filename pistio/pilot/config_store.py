"""The file-backed config store: a directory of Kubernetes and Istio YAML, validated and watched.

Istio's istiod reads config from the Kubernetes API (or, with ``--configDir``, from files) and
admits only what its validating webhook accepts. Files have no webhook in front of them, so the
store applies the same validation on every change and keeps, per resource, the last version
that passed:

- a resource that becomes invalid keeps its previous version; the rejection is logged (resource,
  file:line, reason) and counted (``pistio_config_rejected_total{kind}`` and Istio's
  ``galley_validation_failed``);
- a file that cannot be parsed keeps every resource it contributed before;
- a deleted file (or a document removed from a file) deletes its resources.

Resources are keyed by (group, kind, namespace, name); a namespaced resource written without a
namespace is in ``default``, as ``kubectl apply`` would put it. Watching reloads on inotify
events (Linux) and polls file stamps (mtime, size, inode) as a safety net; a file changed
within the last two seconds is also compared by content, since a quick rewrite can keep the
same stamp. An unchanged resource keeps its object across reloads, so caches keyed by config
objects survive edits to other resources.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pistio.config.issues import ConfigIssue
from pistio.config.loader import config_files, read_text
from pistio.config.resource import Document, Resource
from pistio.config.schema import kind_of
from pistio.config.validation import check_document
from pistio.config.yaml_source import MAX_BYTES

log = logging.getLogger("pistio.config")

# A file written less than this long ago is re-read even when its stamp looks unchanged.
RACY_WINDOW_NS = 2_000_000_000

# Istio's webhook reasons for galley_validation_failed.
REASON_INVALID = "invalid_resource"
REASON_UNKNOWN_KIND = "unknown_kind"
REASON_DECODE = "yaml_decode_error"


@dataclass(frozen=True, order=True)
class StoreKey:
    """One config object's identity (Istio's ConfigKey, with the group)."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )


@dataclass(frozen=True)
class StoredResource:
    resource: Resource
    file: str


@dataclass(frozen=True)
class _FileState:
    stamp: tuple[int, int, int]  # mtime_ns, size, inode
    digest: str
    keys: frozenset[StoreKey]  # the resources this file currently provides


@dataclass
class StoreStats:
    """Counters read by the metrics endpoint."""

    rejected: Counter[str] = field(default_factory=Counter)  # by kind
    # (group, version, resource, reason): Istio's galley_validation_failed labels
    validation_failed: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    validation_passed: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    parse_errors: int = 0
    reloads: int = 0


def key_of(res: Resource) -> StoreKey:
    ns = (res.namespace or "default") if res.info.namespaced else ""
    return StoreKey(res.group, res.kind, ns, res.name)


def _doc_key(doc: Document) -> StoreKey | None:
    """The key an invalid document would have, when its kind is known."""
    try:
        info = kind_of(doc)
    except ValueError:
        return None
    ns = (doc.namespace or "default") if info.namespaced else ""
    return StoreKey(info.group, info.kind, ns, doc.name)


def _version_of(api_version: str) -> str:
    return api_version.rpartition("/")[2]


class ConfigStore:
    """The last good version of every resource under ``root`` (a directory or one file)."""

    def __init__(self, root: str | Path, recursive: bool = True) -> None:
        self.root = Path(root)
        self.recursive = recursive
        self.stats = StoreStats()
        self._resources: dict[StoreKey, StoredResource] = {}
        self._files: dict[str, _FileState] = {}
        self._root_missing_logged = False

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._resources)

    def __iter__(self) -> Iterator[Resource]:
        return (s.resource for s in list(self._resources.values()))

    def get(self, key: StoreKey) -> Resource | None:
        stored = self._resources.get(key)
        return stored.resource if stored else None

    def resources(self) -> list[Resource]:
        """Every resource in force, in file order then document order."""
        return [s.resource for s in self._resources.values()]

    def file_of(self, key: StoreKey) -> str | None:
        stored = self._resources.get(key)
        return stored.file if stored else None

    # -- loading -------------------------------------------------------------

    def _paths(self) -> list[Path] | None:
        if self.root.is_dir():
            return config_files(self.root, self.recursive)
        if self.root.is_file():
            return [self.root]
        return None

    def reload(self) -> frozenset[StoreKey]:
        """Re-read what changed on disk; returns the keys added, changed or removed.

        Safe to run in a worker thread while the event loop reads: the new state is built
        aside and swapped in at the end.
        """
        self.stats.reloads += 1
        paths = self._paths()
        if paths is None:
            if not self._root_missing_logged:
                log.error("config: %s does not exist; keeping the last loaded config", self.root)
                self._root_missing_logged = True
            return frozenset()
        self._root_missing_logged = False
        resources = dict(self._resources)
        files: dict[str, _FileState] = {}
        changed: set[StoreKey] = set()
        now = time.time_ns()
        for path in paths:
            name = str(path)
            old = self._files.get(name)
            try:
                st = path.stat()
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if old is not None and old.stamp == stamp and now - st.st_mtime_ns > RACY_WINDOW_NS:
                    files[name] = old
                    continue
                with path.open("rb") as fh:
                    data = fh.read(MAX_BYTES + 1)
            except OSError as exc:
                # Vanished between listing and reading: treated as deleted below.
                log.debug("config: cannot read %s: %s", name, exc)
                continue
            digest = hashlib.blake2b(data, digest_size=16).hexdigest()
            if old is not None and old.digest == digest:
                files[name] = _FileState(stamp, digest, old.keys)
                continue
            keys = self._load_file(name, data, old.keys if old else frozenset(), resources, changed)
            files[name] = _FileState(stamp, digest, keys)
        for name, old in self._files.items():
            if name not in files:
                log.info("config: %s removed", name)
                self._drop(name, old.keys, resources, changed)
        self._resources, self._files = resources, files
        return frozenset(changed)

    def _load_file(
        self,
        file: str,
        data: bytes,
        old_keys: frozenset[StoreKey],
        resources: dict[StoreKey, StoredResource],
        changed: set[StoreKey],
    ) -> frozenset[StoreKey]:
        docs, issues = read_text(data, file)
        if issues:
            self.stats.parse_errors += 1
            self.stats.validation_failed[("", "", "", REASON_DECODE)] += 1
            log.error(
                "config: cannot parse %s: %s; keeping the %d resource(s) it provided",
                file,
                "; ".join(_plain(i) for i in issues),
                len(old_keys),
            )
            return old_keys
        good: dict[StoreKey, Resource] = {}
        for doc in docs:
            checked = check_document(doc)
            res = checked.resource
            if res is not None:
                key = key_of(res)
                if key in good:
                    log.warning("config: %s: %s is defined twice; the last one wins", file, key)
                good[key] = res
                self.stats.validation_passed[
                    (res.group, _version_of(doc.api_version), res.info.plural)
                ] += 1
                continue
            key = _doc_key(doc)
            self._reject(doc, key, checked.errors)
            previous = resources.get(key) if key is not None else None
            if key is not None and previous is not None and previous.file == file:
                good[key] = previous.resource
        for key in old_keys - good.keys():
            self._drop_key(file, key, resources, changed)
        for key, res in good.items():
            current = resources.get(key)
            if current is not None and current.file != file:
                log.warning(
                    "config: %s is defined in %s and %s; using %s", key, current.file, file, file
                )
            if current is None or current.resource.doc.data != res.doc.data:
                changed.add(key)
            elif current.file == file and current.resource.doc.source == res.doc.source:
                continue  # unchanged: keep the object, so caches keyed by it stay valid
            resources[key] = StoredResource(res, file)
        return frozenset(good)

    def _reject(self, doc: Document, key: StoreKey | None, errors: list[ConfigIssue]) -> None:
        kind = key.kind if key else (doc.kind or "unknown")
        self.stats.rejected[kind] += 1
        if key is None:
            reason_label, plural = REASON_UNKNOWN_KIND, ""
        else:
            reason_label = REASON_INVALID
            try:
                plural = kind_of(doc).plural
            except ValueError:
                plural = ""
        group = key.group if key else doc.api_version.rpartition("/")[0]
        self.stats.validation_failed[
            (group, _version_of(doc.api_version), plural, reason_label)
        ] += 1
        reason = "; ".join(e.reason for e in errors) or "invalid"
        log.error(
            "config: rejected %s (%s): %s; %s",
            key or doc.ref,
            doc.source,
            reason,
            "the previous version stays in force" if key else "ignored",
        )

    def _drop_key(
        self,
        file: str,
        key: StoreKey,
        resources: dict[StoreKey, StoredResource],
        changed: set[StoreKey],
    ) -> None:
        # A resource moved to another file already belongs to that file: keep it.
        current = resources.get(key)
        if current is not None and current.file == file:
            del resources[key]
            changed.add(key)

    def _drop(
        self,
        file: str,
        keys: frozenset[StoreKey],
        resources: dict[StoreKey, StoredResource],
        changed: set[StoreKey],
    ) -> None:
        for key in keys:
            self._drop_key(file, key, resources, changed)

    # -- watching ------------------------------------------------------------

    async def watch(
        self,
        on_change: Callable[[frozenset[StoreKey]], None],
        interval: float = 0.5,
    ) -> None:
        """Reload on every file event (inotify) and at least every ``interval`` seconds,
        until cancelled; `on_change` runs on the event loop."""
        notifier = FileEvents.open([self.root])
        try:
            while True:
                await _wait(notifier, interval)
                try:
                    changed = await asyncio.to_thread(self.reload)
                except Exception:
                    log.exception("config: reload of %s failed", self.root)
                    continue
                if changed:
                    on_change(changed)
        finally:
            if notifier is not None:
                notifier.close()


async def _wait(notifier: FileEvents | None, interval: float) -> None:
    if notifier is None:
        await asyncio.sleep(interval)
    else:
        await notifier.wait(interval)


# --- file events -------------------------------------------------------------------------

# inotify(7) event bits: a file finished writing, or names appeared, moved or vanished.
# IN_MODIFY is left out on purpose: a file is read once its writer closes it, not halfway.
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_ONLYDIR = 0x01000000
_WATCH_MASK = (
    _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
# A burst of events (an editor's write-rename, several files applied at once) is one wake-up.
_SETTLE_SECONDS = 0.01


class FileEvents:
    """Linux inotify on directories (and their subdirectories), through libc via ctypes:
    wakes the config watcher as soon as a file changes, so a change is pushed without
    waiting for the next poll. Polling stays on as a safety net (missed or overflowed
    events, filesystems without inotify); :meth:`open` returns None where inotify is
    unavailable."""

    def __init__(self, fd: int, libc: ctypes.CDLL, roots: list[Path]) -> None:
        self._fd = fd
        self._libc = libc
        self._roots = roots
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)
        self._add_watches()

    @classmethod
    def open(cls, paths: list[Path]) -> FileEvents | None:
        """Watch the directories of ``paths`` (a file's parent directory); None without
        inotify (not Linux, no libc symbol, or the per-user instance limit reached)."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            log.debug("config: inotify unavailable (errno %d); polling only", ctypes.get_errno())
            return None
        roots = [p if p.is_dir() else p.parent for p in paths]
        return cls(fd, libc, roots)

    def _add_watches(self) -> None:
        """Watch every directory under the roots (new subdirectories are picked up on the
        next event); a root that does not exist yet is found by polling."""
        for root in self._roots:
            if not root.is_dir():
                continue
            for dirpath, _dirs, _files in os.walk(root):
                wd = self._libc.inotify_add_watch(
                    self._fd, os.fsencode(dirpath), _WATCH_MASK | _IN_ONLYDIR
                )
                if wd < 0:
                    log.debug("config: cannot watch %s (errno %d)", dirpath, ctypes.get_errno())

    def _on_readable(self) -> None:
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass
        except OSError as exc:
            log.debug("config: inotify read failed: %s", exc)
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until a file event (then a short settle time) or ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return
        await asyncio.sleep(_SETTLE_SECONDS)
        self._event.clear()
        self._add_watches()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def _plain(issue: ConfigIssue) -> str:
    where = f"line {issue.line}: " if issue.line else ""
    return f"{where}{issue.reason}"


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of a file, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
