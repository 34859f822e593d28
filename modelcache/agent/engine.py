"""The node cache engine: L3 -> verified blobs -> a version tree -> an atomic flip.

One engine serves the CLI, the standalone agent and the Kubernetes agent. It
never decides *what* to hold (that is desired state); it makes the disk hold it,
downloading only blobs the node does not have, and reports every step as an event.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from modelcache.agent.events import (
    AlreadyCached,
    Collected,
    EventLog,
    Evicted,
    Failed,
    FileFetched,
    Flipped,
    Installed,
    ModelRemoved,
    PeerBadPiece,
    PeerUnavailable,
    Pinned,
    PullEnded,
    PullStarted,
    Repaired,
    ResumeDiscarded,
    Unpinned,
    VerifyFailed,
    Warmed,
)
from modelcache.api import Manifest, ManifestFile
from modelcache.fleet import InFlightBlob
from modelcache.sources import (
    BlobRoute,
    Credentials,
    FanoutRouter,
    Fleet,
    ObjectClient,
    PeerReport,
    PieceRouter,
    PieceTally,
    PullOptions,
    RateLimiter,
    SourceError,
    VerificationError,
    discard,
    download_file,
    from_l3,
    open_source,
    read_manifest,
)
from modelcache.store import DiskFull, ModelRef, Store, StoreError


class PullProgress(Protocol):
    """What a person sees during a pull (rich bars in the CLI; nothing in the daemon)."""

    def start(self, model: str, version: str, total_bytes: int, files: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def from_peers(self, nbytes: int) -> None:
        """Of the bytes advanced, `nbytes` came from the site's peers (fan-out)."""

    def finish(self) -> None: ...


class _NoProgress:
    def start(self, model: str, version: str, total_bytes: int, files: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def from_peers(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class _ByteCounter:
    """Counts the bytes that really came over the network (a resumed part is not counted)."""

    def __init__(self, forward: Callable[[int], None]) -> None:
        self.forward = forward
        self.total = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.total += nbytes
        self.forward(nbytes)


@dataclass(frozen=True)
class PullResult:
    model: ModelRef
    version: str
    files: int
    files_downloaded: int
    bytes_downloaded: int
    seconds: float
    already_installed: bool


class _PeerEvents(PeerReport):
    """A pull's peer trouble as events: which peer served bad bytes, or failed us."""

    def __init__(self, events: EventLog, model: ModelRef, version: str, entry: ManifestFile):
        self.events = events
        self.model = str(model)
        self.version = version
        self.entry = entry

    def bad_piece(self, peer: str, index: int) -> None:
        self.events.emit(
            PeerBadPiece(
                model=self.model,
                version=self.version,
                peer=peer,
                file=self.entry.path,
                sha256=self.entry.sha256,
                piece=index,
            )
        )

    def unavailable(self, peer: str, reason: str) -> None:
        self.events.emit(
            PeerUnavailable(
                model=self.model,
                version=self.version,
                peer=peer,
                file=self.entry.path,
                reason=reason,
            )
        )


@dataclass
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)


class CacheEngine:
    """Pull, install, flip, roll back, verify and retain, on one node's store."""

    def __init__(
        self,
        store: Store,
        events: EventLog,
        *,
        options: PullOptions | None = None,
        credentials: Credentials | None = None,
        warm_after_pull: bool = True,
        fleet: Fleet | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.events = events
        self.options = options or PullOptions()
        self.credentials = credentials
        self.warm_after_pull = warm_after_pull
        self._clients: dict[tuple[str, Credentials | None], ObjectClient] = {}
        self._clients_lock = threading.Lock()
        # One cap for the whole node, shared by every file and every concurrent pull.
        self.limiter = (
            RateLimiter(self.options.bandwidth_limit)
            if self.options.bandwidth_limit is not None
            else None
        )
        self._cancel = threading.Event()

    def cancel_pulls(self) -> None:
        """The agent is stopping: every download stops after its current chunk, resumable,
        instead of the pool fetching every queued part before the process can exit."""
        self._cancel.set()

    # -- L3 -------------------------------------------------------------------------------
    def client(self, url: str, credentials: Credentials | None = None) -> ObjectClient:
        """One client per (URL, credentials): connection pools are reused across pulls."""
        chosen = credentials or self.credentials
        key = (url, chosen)
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = open_source(url, chosen)
            return self._clients[key]

    def remember_source(self, model: ModelRef, url: str) -> None:
        """Record where a model comes from, so `use`, `verify` can reach L3 later."""
        self.store.record_source(model, url)

    def source_of(self, model: ModelRef) -> str | None:
        return self.store.source(model)

    # -- L3 -> L2 -------------------------------------------------------------------------
    def pull(
        self,
        model: ModelRef,
        url: str,
        version: str,
        *,
        progress: PullProgress | None = None,
        credentials: Credentials | None = None,
    ) -> PullResult:
        """Make `version` installed on this node; download only blobs the node lacks."""
        shown = progress or _NoProgress()
        try:
            if self.store.has_version(model, version):
                self._check_new_source(model, url, version, credentials)
                files = len(self.store.manifest(model, version).files)
                self.events.emit(AlreadyCached(model=str(model), version=version, files=files))
                return PullResult(model, version, files, 0, 0, 0.0, already_installed=True)
            result = self._download(model, url, version, shown, credentials)
        except (SourceError, StoreError) as error:  # every failed pull is an event, early or late
            self.events.emit(
                Failed(operation="pull", model=str(model), version=version, error=str(error))
            )
            raise
        # Recorded only once the URL has served the version: a failed pull changes nothing.
        self.remember_source(model, url)
        return result

    def _check_new_source(
        self, model: ModelRef, url: str, version: str, credentials: Credentials | None
    ) -> None:
        """A held version asked for from another URL: record that URL only once it proves
        to hold the very same version (a mistyped one fails and changes nothing)."""
        recorded = self.source_of(model)
        if recorded == url:
            return
        if recorded is not None:
            theirs = read_manifest(self.client(url, credentials), version)
            ours = self.store.manifest(model, version)
            if [(f.path, f.sha256) for f in theirs.files] != [
                (f.path, f.sha256) for f in ours.files
            ]:
                raise SourceError(
                    f"{url} holds another {version!r} than the one installed from {recorded}"
                )
        self.remember_source(model, url)

    def _download(
        self,
        model: ModelRef,
        url: str,
        version: str,
        shown: PullProgress,
        credentials: Credentials | None,
    ) -> PullResult:
        client = self.client(url, credentials)
        manifest = read_manifest(client, version)
        missing = self._missing_blobs(manifest)
        needed = sum(entry.size for entry in missing.values())
        self.store.ensure_space(needed)
        started = time.monotonic()
        self.events.emit(
            PullStarted(
                model=str(model),
                version=version,
                source=str(client.url),
                files=len(manifest.files),
                files_to_download=len(missing),
                bytes_to_download=needed,
            )
        )
        shown.start(str(model), version, needed, len(missing))
        downloaded = 0
        try:
            for sha256, entry in missing.items():
                downloaded += self._fetch_blob(
                    model, client, version, sha256, entry, progress=shown
                )
            self.store.install_version(model, manifest)
        finally:
            shown.finish()
        seconds = time.monotonic() - started
        self.events.emit(
            PullEnded(
                model=str(model),
                version=version,
                scheme=client.url.scheme,
                files_downloaded=len(missing),
                files_cached=len(manifest.files) - len(missing),
                bytes_downloaded=downloaded,
                seconds=round(seconds, 3),
                rate_bytes_per_second=round(downloaded / seconds) if seconds > 0 else None,
            )
        )
        self.events.emit(Installed(model=str(model), version=version))
        if self.warm_after_pull:
            warmed = self.store.warm(model, version)
            self.events.emit(Warmed(model=str(model), version=version, bytes=warmed))
        return PullResult(
            model,
            version,
            len(manifest.files),
            len(missing),
            downloaded,
            seconds,
            already_installed=False,
        )

    def _missing_blobs(self, manifest: Manifest) -> dict[str, ManifestFile]:
        """One entry per distinct blob the store does not hold yet."""
        missing: dict[str, ManifestFile] = {}
        for entry in manifest.files:
            if entry.sha256 not in missing and not self.store.has_blob(entry.sha256):
                missing[entry.sha256] = entry
        return missing

    def _fetch_blob(
        self,
        model: ModelRef,
        client: ObjectClient,
        version: str,
        sha256: str,
        entry: ManifestFile,
        *,
        progress: PullProgress,
    ) -> int:
        """Download one blob under its lock; another process may have fetched it meanwhile."""
        with self.store.blob_lock(sha256):
            if self.store.has_blob(sha256):
                return 0
            received = _ByteCounter(progress.advance)
            with self._serving(entry) as serving:
                tally = self._download_blob(
                    model, client, version, entry, received=received, serving=serving
                )
                self.store.adopt_blob(self.store.tmp_path(sha256), sha256)
        progress.from_peers(tally.bytes_from_peers)
        self.events.emit(
            FileFetched(
                model=str(model),
                version=version,
                file=entry.path,
                bytes=entry.size,
                sha256=sha256,
                bytes_from_l3=max(0, received.total - tally.bytes_from_peers),
                bytes_from_peers=tally.bytes_from_peers,
                pieces_from_l3=tally.pieces_from_l3,
                pieces_from_peers=tally.pieces_from_peers,
                peers=tally.peers,
            )
        )
        return received.total

    def _download_blob(
        self,
        model: ModelRef,
        client: ObjectClient,
        version: str,
        entry: ManifestFile,
        *,
        received: _ByteCounter,
        serving: InFlightBlob | None,
    ) -> PieceTally:
        """Fetch `entry`'s blob into its temp path, from the site's peers where the node has
        any (docs/fanout.md), else from L3; returns where its pieces came from."""
        dest = self.store.tmp_path(entry.sha256)
        router = self._router(model, version, entry)

        def verified(index: int) -> None:
            if serving is not None:
                serving.verified(index)
            if router is not None:
                router.verified(index)

        try:
            self._fetch_into(
                model,
                client,
                version,
                entry,
                dest=dest,
                received=received,
                router=router,
                verified=verified,
            )
        except VerificationError:
            if router is None or entry.pieces is not None or not router.tally().peers:
                raise
            # Published without piece digests: a peer's bytes are checked only with the
            # whole file. It failed: every byte again from L3, no peer trusted this time.
            self._fetch_into(
                model,
                client,
                version,
                entry,
                dest=dest,
                received=received,
                router=None,
                verified=verified,
            )
            return PieceTally()
        return router.tally() if router is not None else PieceTally()

    @contextlib.contextmanager
    def _serving(self, entry: ManifestFile) -> Iterator[InFlightBlob | None]:
        """While a blob with piece digests is pulled, its verified pieces are the site's to
        take, until it is adopted into blobs/ (then served from there)."""
        if self.fleet is None or entry.pieces is None:
            yield None
            return
        dest = self.store.tmp_path(entry.sha256)
        serving = self.fleet.inflight.begin(entry.sha256, dest, entry.size, entry.pieces.size)
        try:
            yield serving
        finally:
            serving.end()

    def _router(self, model: ModelRef, version: str, entry: ManifestFile) -> FanoutRouter | None:
        if self.fleet is None:
            return None
        peers = self.fleet.members(str(model), version)
        if not peers:
            return None
        report = _PeerEvents(self.events, model, version, entry)
        route = BlobRoute(self.fleet, peers, entry.sha256, entry.piece_count(), report)
        return FanoutRouter(route, entry)

    def _fetch_into(
        self,
        model: ModelRef,
        client: ObjectClient,
        version: str,
        entry: ManifestFile,
        *,
        dest: Path,
        received: _ByteCounter,
        router: PieceRouter | None,
        verified: Callable[[int], None],
    ) -> None:
        key = f"{version}/{entry.path}"
        try:
            download_file(
                client,
                key,
                entry,
                dest,
                options=self.options,
                progress=received.add,
                limiter=self.limiter,
                cancel=self._cancel,
                on_resume_discarded=self._resume_discarded(model, version, entry),
                route=router if router is not None else from_l3,
                on_verified_piece=verified,
            )
        except VerificationError:
            self.events.emit(
                VerifyFailed(
                    model=str(model), version=version, file=entry.path, sha256=entry.sha256
                )
            )
            raise
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            # The disk filled up after the up-front check (someone else wrote): give the
            # preallocated partial back, or every later command fails on a full disk.
            discard(dest)
            free = self.store.usage().free_bytes
            raise DiskFull(
                f"{self.store.root} is full: {model} {version} needed {entry.size} more "
                f"bytes for {entry.path}, {free} are free (the partial download was removed)"
            ) from None

    # -- L2: flips ------------------------------------------------------------------------
    def flip(self, model: ModelRef, version: str) -> str | None:
        """Point `current` at an installed version; returns the version it pointed at."""
        old = self.store.flip(model, version)
        self.events.emit(Flipped(model=str(model), version=version, previous=old))
        return old

    def use(
        self,
        model: ModelRef,
        version: str,
        url: str | None = None,
        *,
        progress: PullProgress | None = None,
    ) -> tuple[PullResult, str | None]:
        """Pull when needed, then flip."""
        source = url or self.source_of(model)
        if source is None and not self.store.has_version(model, version):
            raise StoreError(
                f"{model} has no version {version!r} on this node and no known source: "
                "pass --source URL"
            )
        result = (
            self.pull(model, source, version, progress=progress)
            if source is not None
            else PullResult(model, version, 0, 0, 0, 0.0, already_installed=True)
        )
        return result, self.flip(model, version)

    def rollback(self, model: ModelRef) -> tuple[str, str | None]:
        """Flip back to `previous`: no download, by construction."""
        old = self.store.current(model)
        new = self.store.rollback(model)
        self.events.emit(Flipped(model=str(model), version=new, previous=old, rollback=True))
        return new, old

    # -- L2: integrity ----------------------------------------------------------------------
    def verify(
        self, models: Iterable[ModelRef] | None = None, *, repair: bool = True
    ) -> VerifyReport:
        """Re-hash held blobs; re-download corrupt ones from L3 when the source is known."""
        report = VerifyReport()
        for model in models if models is not None else self.store.models():
            for installed in self.store.versions(model):
                manifest = self.store.manifest(model, installed.version)
                for entry in manifest.files:
                    self.verify_file(model, installed.version, entry, report, repair=repair)
        return report

    def verify_file(
        self,
        model: ModelRef,
        version: str,
        entry: ManifestFile,
        report: VerifyReport,
        *,
        repair: bool,
    ) -> None:
        if entry.sha256 in report.corrupt or entry.sha256 in report.repaired:
            return
        report.checked += 1
        report.bytes += entry.size
        if self.store.verify_blob(entry.sha256):
            return
        report.corrupt.append(entry.sha256)
        self.events.emit(
            VerifyFailed(model=str(model), version=version, file=entry.path, sha256=entry.sha256)
        )
        source = self.source_of(model) if repair else None
        if source is None:
            report.unrepaired.append(entry.sha256)
            return
        try:
            relinked = self._repair(model, source, version, entry)
        except (SourceError, StoreError) as error:  # report every corrupt file, not the first
            report.unrepaired.append(entry.sha256)
            self.events.emit(
                Failed(operation="repair", model=str(model), version=version, error=str(error))
            )
            return
        report.repaired.append(entry.sha256)
        self.events.emit(
            Repaired(
                model=str(model),
                version=version,
                file=entry.path,
                sha256=entry.sha256,
                relinked=relinked,
            )
        )

    def _resume_discarded(
        self, model: ModelRef, version: str, entry: ManifestFile
    ) -> Callable[[str], None]:
        """What a download tells when it throws a resume record's claims away: an event."""

        def emit(reason: str) -> None:
            self.events.emit(
                ResumeDiscarded(
                    model=str(model),
                    version=version,
                    file=entry.path,
                    sha256=entry.sha256,
                    reason=reason,
                )
            )

        return emit

    def _repair(self, model: ModelRef, source: str, version: str, entry: ManifestFile) -> int:
        """Fetch a verified copy of a corrupt blob from L3; returns the files relinked."""
        client = self.client(source)
        self.store.quarantine_blob(entry.sha256)
        tmp = self.store.tmp_path(entry.sha256)
        with self.store.blob_lock(entry.sha256):
            download_file(
                client,
                f"{version}/{entry.path}",
                entry,
                tmp,
                options=self.options,
                limiter=self.limiter,
                cancel=self._cancel,
                on_resume_discarded=self._resume_discarded(model, version, entry),
            )
            self.store.adopt_blob(tmp, entry.sha256)
        return self.store.relink(entry.sha256)

    # -- L2: retention ----------------------------------------------------------------------
    def retain(self, model: ModelRef, keep: int, protect: Iterable[str] = ()) -> list[str]:
        removed = self.store.retain(model, keep, protect)
        for version in removed:
            self.events.emit(Evicted(model=str(model), version=version))
        return removed

    def remove_model(self, model: ModelRef) -> list[str]:
        """Delete a model entirely (its ModelVersion is gone); returns the versions removed."""
        removed = self.store.remove_model(model)
        self.events.emit(ModelRemoved(model=str(model), versions=tuple(removed)))
        return removed

    def pin(self, model: ModelRef, version: str) -> bool:
        """Keep `version` through retention; False when it already was pinned."""
        if version in self.store.pins(model):
            return False
        self.store.pin(model, version)
        self.events.emit(Pinned(model=str(model), version=version))
        return True

    def unpin(self, model: ModelRef, version: str) -> bool:
        if version not in self.store.pins(model):
            return False
        self.store.unpin(model, version)
        self.events.emit(Unpinned(model=str(model), version=version))
        return True

    def gc(self) -> int:
        result = self.store.gc()
        freed = result.blob_bytes_freed + result.tmp_bytes_freed + result.quarantine_bytes_freed
        if result.blobs_removed or result.tmp_removed or result.quarantine_removed:
            self.events.emit(Collected(bytes_freed=freed, blobs_removed=result.blobs_removed))
        return freed
