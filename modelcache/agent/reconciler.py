"""The node's policy, written once for both agents: desired models in, actions out.

The Kubernetes agent (desired state from a NodeCache) and the standalone agent (from
node.yaml) are adapters around `NodeReconciler`: they say what the node must hold,
where the reload targets are, and where the status goes. Everything else is decided
here: pulls run in background threads and are retried with backoff, so that urgent and
cheap work (a flip, a reload, a rollback to a held version) never waits behind a
download; retention, pins and blob collection run in both modes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from modelcache.agent.engine import CacheEngine
from modelcache.agent.events import Failed
from modelcache.agent.reload import call_reload
from modelcache.api import HeldVersion, NodeModelStatus, PodReload, ReloadOutcome
from modelcache.sources import (
    Credentials,
    InvalidSourceURL,
    ObjectNotFound,
    ObjectTooLarge,
    PullCancelled,
    SourceError,
    VerificationError,
    VersionMissing,
)
from modelcache.store import ModelRef, StoreError

log = logging.getLogger(__name__)

# Transient pull failures: retried after 2 s, 4 s, 8 s ... at most every 5 minutes.
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 300.0
# Permanent ones (missing version, checksum mismatch, refused credentials): not hammered,
# tried again when the model's desired state changes or after this long.
PERMANENT_RETRY_SECONDS = 900.0
# A reload call that failed (e.g. an inference pod still starting): soon, not a resync away.
RELOAD_RETRY_SECONDS = 5.0
# Blob collection also runs this often when nothing was removed (old partial downloads).
GC_INTERVAL_SECONDS = 600.0

PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    VersionMissing,
    ObjectNotFound,
    ObjectTooLarge,
    VerificationError,
    InvalidSourceURL,
)


def is_permanent(error: Exception) -> bool:
    """A failure that retrying will not fix until someone changes something."""
    if isinstance(error, PERMANENT_ERRORS):
        return True
    # Refused credentials and other answers of the store itself (not "unreachable").
    return type(error) is SourceError


@dataclass(frozen=True)
class ReloadEndpoint:
    """One inference endpoint to nudge after a flip: `name` is what the status shows."""

    name: str
    url: str


@dataclass(frozen=True)
class DesiredModel:
    """What the node must do for one model: hold `versions`, serve `active`."""

    model: ModelRef
    source: str
    active: str | None
    versions: tuple[str, ...]  # to hold on disk and pull when missing (active, prefetch)
    retain: int
    pins: tuple[str, ...] = ()
    reload: bool = False  # whether pods must acknowledge the live version
    reload_timeout: float = 30.0
    # Read at each pull, so a rotated Secret is picked up without a restart.
    credentials: Callable[[], Credentials | None] | None = None
    credentials_ref: str | None = None  # where they come from, e.g. "secret studio/store"

    @property
    def key(self) -> str:
        return str(self.model)

    @property
    def identity(self) -> tuple[str, str | None]:
        """What a permanent failure is remembered against: change it and the pull retries."""
        return (self.source, self.credentials_ref)


@dataclass
class PullFailure:
    message: str
    permanent: bool
    attempts: int
    retry_at: float  # monotonic
    identity: tuple[str, str | None]

    def wait(self, entry: DesiredModel, now: float) -> float | None:
        """Seconds until the next try is due; None: due now (or the source changed)."""
        if self.identity != entry.identity or now >= self.retry_at:
            return None
        return self.retry_at - now


@dataclass
class PullInFlight:
    """A pull in flight, as the status shows it."""

    total: int = 0
    done: int = 0
    from_peers: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def bytes_per_second(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-3)


@dataclass
class _ModelState:
    failures: dict[str, PullFailure] = field(default_factory=dict)
    acked: dict[str, str] = field(default_factory=dict)  # target -> version it serves
    reloads: dict[str, PodReload] = field(default_factory=dict)  # by target
    targets: set[str] | None = None  # None: not looked yet
    last_error: str | None = None

    def reloaded(self, active: str | None, reload: bool) -> str | None:
        """`active` once every target acknowledged it (no targets: nothing to wait for)."""
        if active is None:
            return None
        if not reload:
            return active
        if self.targets is None:
            return None
        return active if all(self.acked.get(t) == active for t in self.targets) else None


class NodeReconciler:
    """Desired models in, actions on this node's store out. Thread-safe: `step` runs in
    the agent's loop, pulls in their own threads, `report` wherever the status is built."""

    def __init__(
        self,
        engine: CacheEngine,
        *,
        reload_targets: Callable[[DesiredModel], Sequence[ReloadEndpoint]],
        on_change: Callable[[], None] = lambda: None,
        on_pull_end: Callable[[], None] = lambda: None,
        remove_unlisted: bool = False,
    ) -> None:
        self.engine = engine
        self.reload_targets = reload_targets
        self.on_change = on_change  # progress moved, a reload answered: the report is stale
        self.on_pull_end = on_pull_end  # a pull ended: a step can flip or retry now
        self.remove_unlisted = remove_unlisted
        self._lock = threading.Lock()
        self._pulls: dict[tuple[str, str], PullInFlight] = {}
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        self._models: dict[str, _ModelState] = {}
        self._next_gc = 0.0

    # -- the step ---------------------------------------------------------------------------
    def step(self, desired: Iterable[DesiredModel]) -> float | None:
        """Apply what can be applied now; start what takes long. Returns the seconds after
        which a step should run again without a new input (a retry), or None."""
        wanted = {d.key: d for d in desired}
        retry: list[float] = []
        removed = False
        for entry in wanted.values():
            again, evicted = self._step_model(entry)
            removed = removed or evicted
            if again is not None:
                retry.append(again)
        if self.remove_unlisted:
            removed = self._remove_unlisted(set(wanted)) or removed
        self._collect(force=removed)
        return min(retry) if retry else None

    def _step_model(self, entry: DesiredModel) -> tuple[float | None, bool]:
        store, model = self.engine.store, entry.model
        state = self._state(entry.key)
        retry: float | None = None
        if entry.active and store.has_version(model, entry.active):
            flipped = store.current(model) != entry.active
            if flipped:
                self.engine.flip(model, entry.active)
            try:
                if entry.reload and not self._reload(entry, state):
                    retry = RELOAD_RETRY_SECONDS
            finally:  # one status report says "flipped and reloaded", not two apart
                if flipped:
                    self.on_change()
        for version in entry.pins:
            if store.has_version(model, version):
                self.engine.pin(model, version)
        for version in store.pins(model) - set(entry.pins):  # taken off the desired state
            self.engine.unpin(model, version)
        now = time.monotonic()
        for version in entry.versions:
            if store.has_version(model, version):
                continue
            failure = state.failures.get(version)
            wait = failure.wait(entry, now) if failure is not None else None
            if wait is not None:
                retry = wait if retry is None else min(retry, wait)
                continue
            self._start_pull(entry, version)
        evicted = False
        if not self.busy(entry.key):
            keep = {*entry.versions, *entry.pins}
            evicted = bool(self.engine.retain(model, entry.retain, protect=keep))
        return retry, evicted

    def _state(self, key: str) -> _ModelState:
        with self._lock:
            return self._models.setdefault(key, _ModelState())

    def stop_pulls(self) -> None:
        """On shutdown: downloads in flight stop now and stay resumable (see the pull
        threads' comment); the next agent on this node picks them up."""
        self.engine.cancel_pulls()

    def busy(self, key: str | None = None) -> bool:
        """A pull in flight (for `key`, or for any model)."""
        with self._lock:
            return any(key is None or k[0] == key for k in self._pulls)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the pulls in flight (`agent --once`, tests); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads.values())
            if not threads:
                return True
            for thread in threads:
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                thread.join(left)
                if deadline is not None and time.monotonic() >= deadline:
                    return not self.busy()

    # -- reload -----------------------------------------------------------------------------
    def _reload(self, entry: DesiredModel, state: _ModelState) -> bool:
        """Nudge each target that has not acknowledged the live version; False if one failed."""
        assert entry.active is not None
        targets = list(self.reload_targets(entry))
        all_ok, called = True, False
        for target in targets:
            if state.acked.get(target.name) == entry.active:
                continue
            called = True
            outcome = call_reload(
                target.url,
                model=entry.key,
                version=entry.active,
                timeout=entry.reload_timeout,
                target=target.name,
            )
            self._record_reload(entry, state, target, outcome)
            all_ok = all_ok and outcome.ok
        live = {t.name for t in targets}
        with self._lock:
            state.acked = {t: v for t, v in state.acked.items() if t in live}
            state.reloads = {t: r for t, r in state.reloads.items() if t in live}
            state.targets = live
        if called:
            self.on_change()  # once for all the pods called, not once per pod
        return all_ok

    def _record_reload(
        self,
        entry: DesiredModel,
        state: _ModelState,
        target: ReloadEndpoint,
        outcome: ReloadOutcome,
    ) -> None:
        assert entry.active is not None
        self.engine.events.emit(outcome)
        with self._lock:
            if outcome.ok:
                state.acked[target.name] = entry.active
            state.reloads[target.name] = outcome.to_pod_reload(dt.datetime.now(dt.UTC))

    # -- pulls ------------------------------------------------------------------------------
    def _start_pull(self, entry: DesiredModel, version: str) -> None:
        key = (entry.key, version)
        with self._lock:
            if key in self._pulls:
                return
            self._pulls[key] = PullInFlight()
            # A daemon thread: SIGTERM ends the agent at once, not after the download; the
            # partial stays resumable, as after a kill.
            thread = threading.Thread(
                target=self._pull, args=(entry, version), name=f"pull {key}", daemon=True
            )
            self._threads[key] = thread
        thread.start()

    def _pull(self, entry: DesiredModel, version: str) -> None:
        key = (entry.key, version)
        state = self._state(entry.key)
        try:
            credentials = entry.credentials() if entry.credentials is not None else None
            self.engine.pull(
                entry.model,
                entry.source,
                version,
                progress=_Progress(self, key),
                credentials=credentials,
            )
            with self._lock:
                state.failures.pop(version, None)
        except PullCancelled:  # the agent is stopping: not a failure, nothing to report
            log.info("pull of %s %s stopped with the agent; it resumes on restart", *key)
            return
        except Exception as error:  # every failure is reported and retried; never kills the agent
            self._failed(entry, version, state, error)
        finally:
            with self._lock:
                self._pulls.pop(key, None)
                self._threads.pop(key, None)
        self.on_change()
        self.on_pull_end()

    def _failed(
        self, entry: DesiredModel, version: str, state: _ModelState, error: Exception
    ) -> None:
        permanent = is_permanent(error)
        with self._lock:
            before = state.failures.get(version)
            again = before is not None and before.identity == entry.identity
            attempts = before.attempts + 1 if before is not None and again else 1
            if permanent:
                wait = PERMANENT_RETRY_SECONDS
            else:
                wait = min(RETRY_FIRST_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS)
            state.failures[version] = PullFailure(
                message=str(error),
                permanent=permanent,
                attempts=attempts,
                retry_at=time.monotonic() + wait,
                identity=entry.identity,
            )
            state.last_error = str(error)
        if not isinstance(error, (SourceError, StoreError)):  # the engine emitted the others
            self.engine.events.emit(
                Failed(operation="pull", model=entry.key, version=version, error=str(error))
            )
        log.warning(
            "pull of %s %s failed (%s, attempt %d), next try in %.0fs: %s",
            entry.key,
            version,
            "permanent" if permanent else "transient",
            attempts,
            wait,
            error,
        )

    def _progress(
        self, key: tuple[str, str], *, total: int | None = None, done: int = 0, peers: int = 0
    ) -> None:
        with self._lock:
            pull = self._pulls.get(key)
            if pull is not None:
                if total is not None:
                    pull.total = total
                pull.done += done
                pull.from_peers += peers
        self.on_change()

    # -- retention and collection ---------------------------------------------------------------
    def _remove_unlisted(self, wanted: set[str]) -> bool:
        removed = False
        for model in self.engine.store.models():
            key = str(model)
            if key in wanted or self.busy(key):
                continue
            what = self.engine.remove_model(model)
            with self._lock:
                self._models.pop(key, None)
            log.info("removed %s (%s): no longer wanted on this node", model, what)
            removed = True
            self.on_change()
        return removed

    def _collect(self, *, force: bool) -> None:
        """Blobs no version references: after every eviction, and every GC_INTERVAL_SECONDS
        (old partials). The store's gc skips blobs a pull in flight holds."""
        now = time.monotonic()
        if not force and now < self._next_gc:
            return
        self._next_gc = now + GC_INTERVAL_SECONDS
        self.engine.gc()

    # -- the report -------------------------------------------------------------------------
    def report(self, entry: DesiredModel) -> NodeModelStatus:
        """One model's state on this node: its entry in the NodeCache status (the standalone
        agent reads it too)."""
        store, model = self.engine.store, entry.model
        state = self._state(entry.key)
        held = [
            HeldVersion(version=v.version, state="Cached", bytes=v.size)
            for v in store.versions(model)
        ]
        installed = {h.version for h in held}
        rate = None
        now = time.monotonic()
        with self._lock:
            for version in entry.versions:
                if version in installed:
                    continue
                pull = self._pulls.get((entry.key, version))
                failure = state.failures.get(version)
                if pull is not None:
                    rate = pull.bytes_per_second
                    held.append(
                        HeldVersion(
                            version=version,
                            state="Pulling",
                            bytes=pull.total,
                            bytes_done=pull.done,
                            bytes_from_peers=pull.from_peers,
                        )
                    )
                elif failure is not None:
                    why = _failure_text(failure, now)
                    held.append(HeldVersion(version=version, state="Failed", message=why))
                else:
                    held.append(HeldVersion(version=version, state="Pending"))
            reloads = list(state.reloads.values())
            last_error = state.last_error
        active = store.current(model)
        with self._lock:
            reloaded = state.reloaded(active, entry.reload)
        return NodeModelStatus(
            namespace=model.namespace,
            name=model.name,
            active=active,
            versions=held,
            bytes_per_second=rate,
            last_error=last_error,
            reloads=reloads,
            reloaded_version=reloaded,
        )


def _failure_text(failure: PullFailure, now: float) -> str:
    left = max(failure.retry_at - now, 0)
    kind = "permanent: retried when the source changes, or" if failure.permanent else "retrying"
    return f"{failure.message} (attempt {failure.attempts}; {kind} in {left:.0f}s)"


class _Progress:
    """Feeds a pull's byte counts into the report (published at the reporter's pace)."""

    def __init__(self, reconciler: NodeReconciler, key: tuple[str, str]) -> None:
        self.reconciler = reconciler
        self.key = key

    def start(self, model: str, version: str, total_bytes: int, files: int) -> None:
        self.reconciler._progress(self.key, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self.reconciler._progress(self.key, done=nbytes)

    def from_peers(self, nbytes: int) -> None:
        self.reconciler._progress(self.key, peers=nbytes)

    def finish(self) -> None:
        self.reconciler.on_change()
