"""The L3 -> L2 downloader: parallel ranged GETs into one preallocated file, durable resume, verify.

One file is cut into parts; worker threads fetch parts with ranged GETs pinned
to the ETag that HEAD saw and `pwrite` them at their offsets into one shared fd.
A resume record beside the partial file (`<dest>.resume.json`, see `resume`) claims
finished parts, but only after an fsync of the data: a SIGKILL at any instant leaves a
record that never claims bytes the disk may not hold. Bytes of two versions of
an object are never mixed: a changed ETag discards everything and starts over.
The file is hashed in order while it arrives (size, sha256, CRC-64/XZ) and checked
against the manifest. A bandwidth cap (`ratelimit`) may be shared by several files.

When the manifest gives the file's pieces (schema 2), the parts are those pieces: each is
hashed while it streams and checked against the publisher's digest before the record
claims it and before the ordered hash takes it in; a piece whose bytes do not match is
fetched again from zero, at most `PIECE_REFETCHES` times, then the download fails naming
it. Where each piece is read from is a `PieceRouter`'s choice (`pieces`; L3 by default).

Transient failures (`SourceUnreachable`: refused connections, timeouts, 5xx,
streams cut short) are retried per part with jittered exponential backoff; a
retried part continues from the last byte it wrote.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from modelcache.api.manifest import ManifestFile
from modelcache.fs import Digest, OrderedHasher, fsync_dir, token, write_atomic
from modelcache.sources.base import (
    ObjectChanged,
    ObjectClient,
    ObjectInfo,
    Progress,
    SourceError,
    SourceUnreachable,
)
from modelcache.sources.pieces import (
    ObjectPieces,
    Piece,
    PieceRead,
    PieceRouter,
    PieceSource,
    from_l3,
    part_size_of,
    plan_pieces,
)
from modelcache.sources.ratelimit import RateLimiter
from modelcache.sources.resume import (
    Journal,
    ResumeRecord,
    read_record,
    resume_path,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
CHUNK_SIZE = MiB
"""Bytes per read from a response: big enough for 10 Gbit/s, small enough for smooth progress."""
HEAD_RETRIES = 2
"""HEAD fails fast (nothing transferred yet, the caller's loop retries later)."""
RESTARTS = 1
"""How often an object that changes under a download is started over before giving up."""
PIECE_REFETCHES = 2
"""How often a piece whose bytes fail its digest is fetched again from zero before the
download fails naming it (a flipped bit on the way is cured by one; a store that holds
other bytes than were published is not cured by any)."""

DiscardHook = Callable[[str], None]
"""Told why a resume record's claims were thrown away (the engine makes it an event)."""
PieceHook = Callable[[int], None]
"""Told the index of each piece whose bytes on disk match the publisher's digest."""

What = Literal["size", "crc64", "sha256"]


@dataclass(frozen=True)
class PullOptions:
    """How to pull one file. 16 x 8 MiB ranged GETs keep a 100 Mbit/s, 45 ms RTT link full
    (16 TCP windows ramp up in parallel) and give a 10 Gbit/s LAN enough streams, with
    128 MiB in flight at most."""

    concurrency: int = 16
    part_size: int = 8 * MiB
    # A part gives up after `stall_timeout` seconds without a byte (a store gone for good),
    # not after a count of failures: a flaky WAN that breaks every few MB, or a store back
    # after a minute, still completes. `retries` caps attempts too when set (tests).
    stall_timeout: float = 120.0
    retries: int | None = None
    bandwidth_limit: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.part_size < 1:
            raise ValueError(f"part size must be at least 1 byte, not {self.part_size}")
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"retries must not be negative, not {self.retries}")
        if self.stall_timeout <= 0:
            raise ValueError(f"stall timeout must be positive, not {self.stall_timeout}")
        if self.bandwidth_limit is not None and self.bandwidth_limit <= 0:
            raise ValueError(f"bandwidth limit must be positive, not {self.bandwidth_limit}")


class VerificationError(SourceError):
    """The bytes are not the ones the manifest promises (size, CRC-64/XZ or sha256 of the
    file, or the sha256 of one piece: then `piece` is its index)."""

    def __init__(
        self,
        path: str,
        what: What,
        expected: str,
        actual: str,
        source: str,
        *,
        piece: int | None = None,
    ) -> None:
        self.path = path
        self.what = what
        self.expected = expected
        self.actual = actual
        self.piece = piece
        label = what if piece is None else f"piece {piece} {what}"
        super().__init__(
            f"{path}: {label} mismatch: expected {expected}, got {actual} (from {source})"
        )


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


# -- the download ------------------------------------------------------------------------


@dataclass
class _Cursor:
    """How much of a part is written: a retry continues from there."""

    part: Piece
    written: int = 0
    progress_at: float = field(default_factory=time.monotonic)  # the last byte received
    stalled: int = 0  # failed attempts since then
    seen: int = 0  # `written` at the last failed attempt

    @property
    def position(self) -> int:
        return self.part.start + self.written

    def failed(self) -> int:
        """Count a failed attempt; attempts that moved bytes reset the backoff."""
        self.stalled = 0 if self.written > self.seen else self.stalled + 1
        self.seen = self.written
        return self.stalled


class _Aborted(Exception):  # noqa: N818 - internal signal, never escapes
    """Another part failed: stop this one."""


class PullCancelled(Exception):  # noqa: N818 - reads as what it is
    """The caller is stopping (an agent on SIGTERM): the download stopped where it was and
    stays resumable. Without it the pool's workers would fetch every queued part first."""


@dataclass
class _Download:
    """One attempt at one object version into one fd; `run()` fetches the pending parts."""

    l3: ObjectPieces
    path: str  # the manifest's path of the file, for messages
    part_size: int
    fd: int
    journal: Journal
    options: PullOptions
    progress: Progress | None
    limiter: RateLimiter | None
    hasher: OrderedHasher | None = None
    resume_from: dict[int, int] = field(default_factory=dict)  # part -> bytes already on disk
    abort: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event | None = None  # the caller's: set when it stops
    route: PieceRouter = from_l3
    on_verified: PieceHook | None = None

    @property
    def chunk(self) -> int:
        size = CHUNK_SIZE
        if self.limiter is not None:  # small reads keep a throttled stream smooth
            size = max(16 * 1024, min(size, int(self.limiter.rate / 16)))
        return max(1, min(size, self.part_size))

    def run(self, parts: list[Piece]) -> None:
        if not parts:
            return
        workers = min(self.options.concurrency, len(parts))
        with ThreadPoolExecutor(workers, thread_name_prefix="modelcache-pull") as pool:
            futures = [pool.submit(self.fetch, part) for part in parts]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C in the caller: stop the workers, don't finish
                self._stop(futures)
                raise
            if any(f.done() and f.exception() is not None for f in futures):
                self._stop(futures)
                raise _first_real_error(futures)

    def _stop(self, futures: list[Future[None]]) -> None:
        self.abort.set()
        for future in futures:
            future.cancel()
        wait(futures)

    def fetch(self, piece: Piece) -> None:
        """Fetch one piece, retrying transient failures from the last byte written (or from
        what the resume record says is already on disk). A piece with a digest is checked
        before anyone is told it is there, and fetched again from zero when it fails."""
        held = self.resume_from.get(piece.index, 0)
        mismatched: list[str] = []
        while True:
            check = None if piece.sha256 is None else self._piece_hash(piece, held)
            source = self._fetch_bytes(piece, held, check, tuple(mismatched))
            if check is not None and check.hexdigest() != piece.sha256:
                mismatched.append(source.describe())
                self._mismatch(piece, check.hexdigest(), mismatched)
                held = 0
                continue
            if check is not None:
                if self.hasher is not None:
                    self.hasher.written(piece.index, piece.length)
                if self.on_verified is not None:
                    self.on_verified(piece.index)
            self.journal.finished(piece)
            return

    def _fetch_bytes(
        self,
        piece: Piece,
        held: int,
        check: hashlib._Hash | None,
        mismatched: tuple[str, ...],
    ) -> PieceSource:
        """Get the piece's bytes after its first `held` onto the disk, from the sources the
        router picks; returns the one that sent the last of them."""
        cursor = _Cursor(piece, written=held)
        cursor.seen = cursor.written
        source: PieceSource = self.l3
        for try_ in self._retrying(cursor):
            with try_:
                source = self.route(
                    PieceRead(piece, cursor.written, mismatched, self.l3, self._stopping)
                )
                self._stream(cursor, source, check)
                if cursor.written < piece.length:
                    raise SourceUnreachable(
                        f"{source.describe()}: response ended after "
                        f"{cursor.written} of {piece.length} bytes of part {piece.index}"
                    )
        return source

    def _piece_hash(self, piece: Piece, held: int) -> hashlib._Hash:
        """A piece's hash, fed first with the bytes a resumed piece already has on disk."""
        check = hashlib.sha256()
        buffer = bytearray(min(CHUNK_SIZE, max(1, held)))
        view = memoryview(buffer)
        position = 0
        while position < held:
            got = os.preadv(self.fd, [view[: held - position]], piece.start + position)
            if got <= 0:
                raise OSError(f"short read at offset {piece.start + position}")
            check.update(view[:got])
            position += got
        return check

    def _mismatch(self, piece: Piece, actual: str, mismatched: list[str]) -> None:
        """The piece's bytes are not the publisher's: nothing claims them; try again from
        zero, or give up naming the piece once it failed 1 + PIECE_REFETCHES times."""
        assert piece.sha256 is not None
        self.journal.progressed(piece, 0, 0)  # the record no longer claims any of its bytes
        if len(mismatched) > PIECE_REFETCHES:
            raise VerificationError(
                self.path, "sha256", piece.sha256, actual, mismatched[-1], piece=piece.index
            )
        log.warning(
            "%s: piece %d from %s does not match its sha256: fetching it again from zero "
            "(%d of %d)",
            self.path,
            piece.index,
            mismatched[-1],
            len(mismatched),
            PIECE_REFETCHES,
        )

    def _stream(self, cursor: _Cursor, source: PieceSource, check: hashlib._Hash | None) -> None:
        """Write the rest of the part as it arrives, advancing the cursor per chunk. A part
        without a digest is handed to the ordered hash as it lands; one with a digest only
        once it is checked (`fetch`)."""
        part = cursor.part
        self._check_abort()
        ranges = source.read(part, cursor.written, self.chunk)
        try:
            for data in ranges:
                self._check_abort()
                if cursor.position + len(data) > part.end:
                    raise SourceError(
                        f"{source.describe()}: sent more than the "
                        f"{part.length} bytes asked for part {part.index}"
                    )
                if self.limiter is not None:
                    self.limiter.acquire(len(data))
                if check is not None:
                    check.update(data)
                _pwrite_all(self.fd, data, cursor.position)
                cursor.written += len(data)
                cursor.progress_at = time.monotonic()
                self.journal.progressed(part, cursor.written, len(data))
                if self.hasher is not None and check is None:
                    self.hasher.written(part.index, cursor.written)
                if self.progress is not None:
                    self.progress(len(data))
        finally:
            _close(ranges)  # an abandoned response must not hold its connection

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake up at once when another part failed (or soon, when cancelled)."""
        deadline = time.monotonic() + seconds
        while not self.abort.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (self.cancel is not None and self.cancel.is_set()):
                return

    def _stopping(self) -> bool:
        """Whether this download is being stopped: a router waiting on a peer gives up."""
        return self.abort.is_set() or (self.cancel is not None and self.cancel.is_set())

    def _check_abort(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise PullCancelled(f"{self.l3.describe()}: the download was cancelled")
        if self.abort.is_set():
            raise _Aborted

    def _retrying(self, cursor: _Cursor) -> Retrying:
        options = self.options

        def give_up(state: RetryCallState) -> bool:
            if options.retries is not None and state.attempt_number > options.retries:
                return True
            return time.monotonic() - cursor.progress_at > options.stall_timeout

        def backoff(state: RetryCallState) -> float:
            # 0.25 s, 0.5 s ... at most 8 s between tries, jittered; from the start again
            # after an attempt that received bytes.
            return random.uniform(0, min(8.0, 0.25 * 2 ** cursor.failed()))  # noqa: S311

        return Retrying(
            stop=give_up,
            wait=backoff,
            retry=retry_if_exception_type(SourceUnreachable),
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _first_real_error(futures: Iterable[Future[None]]) -> BaseException:
    """The error that stopped the download, not the `_Aborted` it caused in other parts."""
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    real = [e for e in errors if e is not None and not isinstance(e, _Aborted)]
    changed = [e for e in real if isinstance(e, ObjectChanged)]
    chosen = (changed or real or errors)[0]
    assert chosen is not None
    return chosen


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "retrying a part after attempt %d: %s",
        state.attempt_number,
        error,
    )


def head(client: ObjectClient, key: str, retries: int = HEAD_RETRIES) -> ObjectInfo:
    """HEAD with a couple of quick retries: a dead endpoint is reported within a second."""
    for try_ in Retrying(
        stop=stop_after_attempt(retries + 1),
        wait=wait_random_exponential(multiplier=0.2, max=1),
        retry=retry_if_exception_type(SourceUnreachable),
        reraise=True,
    ):
        with try_:
            return client.head(key)
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


def check_head(client: ObjectClient, key: str, info: ObjectInfo, expected: ManifestFile) -> None:
    """Refuse before downloading when HEAD already disagrees with the manifest."""
    where = client.describe(key)
    if info.size != expected.size:
        raise VerificationError(expected.path, "size", str(expected.size), str(info.size), where)
    if info.crc64 is not None and info.crc64 != int(expected.crc64):
        raise VerificationError(expected.path, "crc64", expected.crc64, str(info.crc64), where)


def verify(digest: Digest, expected: ManifestFile, where: str) -> None:
    """Compare what the file hashes to with the manifest entry; the first difference wins."""
    checks: list[tuple[What, str, str]] = [
        ("size", str(expected.size), str(digest.size)),
        ("sha256", expected.sha256, digest.sha256),
        ("crc64", expected.crc64, str(digest.crc64)),
    ]
    for what, want, got in checks:
        if want != got:
            raise VerificationError(expected.path, what, want, got, where)


def discard(dest: Path) -> None:
    """Remove a partial file and its record (record first: it must never outlive its data)."""
    _remove_entry(resume_path(dest))
    _remove_entry(dest)


def _remove_entry(path: Path) -> None:
    """Clear `path` for a download without opening or following what is there: a file, a
    FIFO, a link is unlinked, an empty directory removed; a directory with entries in it is
    renamed aside (logged), never deleted unseen."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        path.unlink(missing_ok=True)
        return
    try:
        path.rmdir()
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        aside = path.with_name(f".{path.name}.aside-{token()}")
        os.rename(path, aside)
        log.warning(
            "moved the directory %s aside to %s: a download keeps a file there",
            path,
            aside,
        )


@dataclass(frozen=True)
class _Opened:
    fd: int
    record: ResumeRecord

    @property
    def resumed(self) -> bool:
        """Whether the file starts from bytes a record claims (which may be false)."""
        return bool(self.record.done or self.record.partial)


@contextlib.contextmanager
def _open_partial(
    dest: Path,
    key: str,
    info: ObjectInfo,
    part_size: int,
    on_discard: DiscardHook | None = None,
) -> Iterator[_Opened]:
    """Open the partial file for `info`'s version: reuse what a matching record claims,
    otherwise start from an empty, preallocated file. Whatever is not a regular file at
    either path (a FIFO, a directory, a link) is cleared, never opened."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    record_path = resume_path(dest)
    record, problem = read_record(record_path)
    reusable = (
        record is not None
        and record.matches(key, info.etag, info.size, part_size)
        and _regular_size(dest) == info.size
    )
    if record is not None and not reusable:
        problem = "it was of another version or layout"
    if problem is not None:
        _resume_discarded(key, info, f"discarding partial download of {key}: {problem}", on_discard)
    if not reusable:
        discard(dest)
        record = ResumeRecord(key, info.etag, info.size, part_size)
    assert record is not None
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(dest, flags if reusable else flags | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if not reusable:
            _preallocate(fd, info.size, dest)
            write_atomic(record_path, record.to_json())
        yield _Opened(fd, record)
    finally:
        os.close(fd)


def _resume_discarded(
    key: str, info: ObjectInfo, message: str, on_discard: DiscardHook | None
) -> None:
    log.warning(
        "%s",
        message,
    )
    if on_discard is not None:
        on_discard(message)


def _regular_size(path: Path) -> int | None:
    """The size of the regular file at `path` itself; None for anything else or nothing."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _preallocate(fd: int, size: int, dest: Path) -> None:
    """Reserve the blocks up front: a full disk fails now, not after gigabytes."""
    if size == 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC, f"no space left on device for {size} bytes", str(dest)
            ) from None
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, size)


def download_file(
    client: ObjectClient,
    key: str,
    expected: ManifestFile,
    dest: Path,
    *,
    options: PullOptions = PullOptions(),
    progress: Progress | None = None,
    limiter: RateLimiter | None = None,
    cancel: threading.Event | None = None,
    on_resume_discarded: DiscardHook | None = None,
    route: PieceRouter = from_l3,
    on_verified_piece: PieceHook | None = None,
) -> Digest:
    """Download `key` into `dest` (a temp path) and verify it against `expected`.

    Resumes from `dest`'s record when it is for the same object version; a resumed file
    that fails verification is fetched once more from zero (a record may claim bytes the
    disk lost), so only a mismatch of a from-zero fetch is reported. `progress` is called
    from worker threads with the bytes of each chunk received (so resumed parts are not
    counted; a restart, or a piece fetched again, counts again). `limiter` shares a
    bandwidth cap across calls; otherwise `options.bandwidth_limit` caps this call alone.
    `on_resume_discarded` is told why a record's claims were thrown away.

    When `expected` has pieces, they are the parts (`options.part_size` does not apply),
    each checked against its digest as it completes; `route` picks where each read of a
    piece comes from (L3, pinned to HEAD's ETag, by default), and `on_verified_piece` is
    told each piece whose bytes on disk are checked: first those a resume record claims
    (checked by the call that claimed them), from the calling thread, then each piece as
    it passes, from worker threads.
    Raises VerificationError: of the whole file (partial file removed) or, with `piece` set,
    of a piece that failed its digest 1 + PIECE_REFETCHES times (the partial and its record
    kept: they claim only the pieces that matched); ObjectNotFound, ObjectChanged (it kept
    changing), SourceUnreachable (after retries), OSError (local disk), and PullCancelled
    once `cancel` is set (the partial kept, resumable).
    """
    if limiter is None and options.bandwidth_limit is not None:
        limiter = RateLimiter(options.bandwidth_limit)
    where = client.describe(key)
    info = head(client, key)
    changes = 0
    refetched = False
    while True:
        check_head(client, key, info, expected)
        try:
            fetched = _fetch_all(
                ObjectPieces(client, key, info.etag),
                info,
                expected,
                dest,
                options=options,
                progress=progress,
                limiter=limiter,
                cancel=cancel,
                on_discard=on_resume_discarded,
                route=route,
                on_verified=on_verified_piece,
            )
        except ObjectChanged:
            discard(dest)
            if changes == RESTARTS:
                raise ObjectChanged(
                    f"{where} changed {RESTARTS + 1} times while downloading; is something "
                    "writing over a published version? Try again later"
                ) from None
            changes += 1
            log.warning(
                "%s changed during the download: starting over",
                where,
            )
            info = head(client, key)
            continue
        try:
            return _verify_download(dest, info, expected, where, fetched.digest)
        except VerificationError as error:
            if not fetched.resumed or refetched:
                raise
            refetched = True  # the partial and its record are gone: the next fetch is from zero
            _resume_discarded(
                key,
                info,
                f"{where} resumed from its record failed verification ({error.what} mismatch):"
                " discarded, fetching it again from zero",
                on_resume_discarded,
            )


@dataclass(frozen=True)
class _Fetched:
    digest: Digest
    resumed: bool  # started from bytes a resume record claimed


def _fetch_all(
    l3: ObjectPieces,
    info: ObjectInfo,
    expected: ManifestFile,
    dest: Path,
    *,
    options: PullOptions,
    progress: Progress | None,
    limiter: RateLimiter | None,
    cancel: threading.Event | None = None,
    on_discard: DiscardHook | None = None,
    route: PieceRouter = from_l3,
    on_verified: PieceHook | None = None,
) -> _Fetched:
    """Fetch every part not yet on disk (a durable record says what is), hashing the file
    in order while it arrives; returns what the whole file hashes to."""
    part_size = part_size_of(expected, options.part_size)
    with _open_partial(dest, l3.key, info, part_size, on_discard) as opened:
        parts = plan_pieces(expected, options.part_size)
        todo = [p for p in parts if p.index not in opened.record.done]
        started = opened.record.started()
        journal = Journal(opened.fd, resume_path(dest), opened.record)
        log.info(
            "downloading %s: %d bytes, %d of %d %s to fetch",
            l3.describe(),
            info.size,
            len(todo),
            len(parts),
            "parts" if expected.pieces is None else "pieces",
        )
        # A started piece's bytes count for the ordered hash only once the piece is checked.
        hashed_from = started if expected.pieces is None else {}
        hasher = OrderedHasher(opened.fd, parts, complete=opened.record.done, started=hashed_from)
        if on_verified is not None and expected.pieces is not None:
            for index in sorted(opened.record.done):  # checked by the run that claimed them
                on_verified(index)
        download = _Download(
            l3,
            expected.path,
            part_size,
            opened.fd,
            journal,
            options,
            progress,
            limiter,
            hasher,
            started,
            cancel=cancel,
            route=route,
            on_verified=on_verified,
        )
        try:
            download.run(todo)
        except BaseException:
            hasher.cancel()
            raise
        finally:
            journal.flush()  # keep what is on disk claimable, whatever happened
        digest = hasher.result()
        os.fsync(opened.fd)
        return _Fetched(digest, opened.resumed)


def _verify_download(
    dest: Path, info: ObjectInfo, expected: ManifestFile, where: str, digest: Digest
) -> Digest:
    try:
        verify(digest, expected, where)
        if info.crc64 is not None and info.crc64 != digest.crc64:
            raise VerificationError(
                expected.path, "crc64", str(info.crc64), str(digest.crc64), where
            )
    except VerificationError:
        discard(dest)
        raise
    resume_path(dest).unlink(missing_ok=True)
    fsync_dir(dest.parent)
    log.info(
        "downloaded and verified %s",
        where,
    )
    return digest
