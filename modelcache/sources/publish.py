"""`modelcache publish`: upload a directory as an immutable version to L3.

Order matters: claim the name, list it in `index.json` as `publishing`, upload
every file, write `<version>/manifest.json`, then mark it `published`. An agent
only trusts a version whose manifest exists, so a publish that dies halfway
leaves nothing an agent would pull; and the index lists a version before its
manifest exists, so one that dies after its manifest still leaves it listed.
Every reader settles `publishing` entries by their manifests (`settle`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from modelcache.api.manifest import (
    INDEX_MAX_BYTES,
    INDEX_NAME,
    MANIFEST_NAME,
    MIN_PIECE,
    Manifest,
    ManifestFile,
    Pieces,
    VersionIndex,
    piece_size_for,
)
from modelcache.api.names import check_relative_path, check_version
from modelcache.fs import Digest, hash_file, kind_of
from modelcache.problems import one_line
from modelcache.sources.base import ObjectClient, ObjectNotFound, Progress, SourceError

log = logging.getLogger(__name__)


class VersionExists(SourceError):  # noqa: N818 - reads as what it is
    """Versions are immutable: publishing over one is refused."""


class VersionMissing(SourceError):  # noqa: N818
    """No manifest at `<prefix>/<version>/manifest.json`."""


@dataclass(frozen=True)
class PublishedFile:
    local: Path
    entry: ManifestFile


def scan_directory(directory: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) for every regular file under `directory`, sorted.

    Anything else but a directory (a symlink, a FIFO, a socket, a device) is refused by
    name: skipped, it would publish a version without it; read, a FIFO would block."""
    if not directory.is_dir():
        raise SourceError(f"{directory} is not a directory")
    found: list[tuple[str, Path]] = []
    for path in sorted(directory.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise SourceError(f"{path} is {kind_of(mode)}: publish regular files only")
        relative = path.relative_to(directory).as_posix()
        found.append((check_relative_path(relative), path))
    if not found:
        raise SourceError(f"{directory} holds no files to publish")
    return found


def manifest_key(version: str) -> str:
    return f"{check_version(version)}/{MANIFEST_NAME}"


def read_manifest(client: ObjectClient, version: str) -> Manifest:
    """The manifest of a published version; VersionMissing when there is none."""
    key = manifest_key(version)
    try:
        data = client.get_bytes(key)
    except ObjectNotFound:
        raise VersionMissing(f"version {version!r} not found: no {client.describe(key)}") from None
    try:
        manifest = Manifest.from_json(data)
    except ValueError as error:
        raise SourceError(f"invalid manifest {client.describe(key)}: {one_line(error)}") from None
    if manifest.version != version:
        raise SourceError(
            f"manifest {client.describe(key)} says version {manifest.version!r}, "
            f"expected {version!r}"
        )
    return manifest


def read_index(client: ObjectClient) -> VersionIndex:
    """`index.json`, or an empty index for a location nothing was published to yet."""
    try:
        return VersionIndex.from_json(client.get_bytes(INDEX_NAME, limit=INDEX_MAX_BYTES))
    except ObjectNotFound:
        return VersionIndex()
    except ValueError as error:
        raise SourceError(
            f"invalid index {client.describe(INDEX_NAME)}: {one_line(error)}"
        ) from None


def publish(
    client: ObjectClient,
    directory: str | os.PathLike[str],
    version: str,
    *,
    progress: Progress | None = None,
    on_file: Callable[[str, int], None] | None = None,
) -> Manifest:
    """Publish `directory` as `version`: claim the name, make sure no manifest exists under
    it, list it as `publishing`, upload and check every file, write the manifest, then mark
    the claim and the index entry `published`.

    The claim is checked, then the manifest (never the other way round: a publish that
    checked before another one finished would take the released name and overwrite its
    files), and it is kept for good once the version is published, so that no later
    publish can take the name again, not even after `prune`."""
    check_version(version)
    files = scan_directory(Path(directory))
    index = read_index(client)  # a garbage index fails here, before anything is written
    claim = Claim.take(client, version)
    listed = False
    try:
        if client.exists(manifest_key(version)):  # published before claims were kept
            raise VersionExists(_exists_message(client, version))
        _change_index(client, lambda now: now.with_publishing(version, claim.claimed), index)
        listed = True
        manifest = _upload(client, files, version, claim, progress=progress, on_file=on_file)
        claim.check_held()
        if not client.put_bytes_if_absent(manifest_key(version), manifest.to_json()):
            raise VersionExists(f"version {version!r} appeared at {client.describe(version)}")
    except BaseException:  # failed before its manifest: unlist it and free the name
        if claim.held_or_unknown() is True:  # never undo what a publish that took it did
            if listed:
                with contextlib.suppress(SourceError):  # else readers drop it once unclaimed
                    _change_index(client, partial(VersionIndex.without, versions={version}))
            claim.release()
        raise
    claim.mark_published()
    try:
        _change_index(client, lambda now: now.with_version(manifest))
    except SourceError as error:  # published all the same: readers settle the entry
        log.warning("%s is published; its index entry stays `publishing`: %s", version, error)
    return manifest


@dataclass
class Claim:
    """A publish's hold on a version name: `<prefix>/.claims/<version>`, written with the
    store's conditional write, holding a token only this publish knows.

    While the version is being published the claim says `publishing`; once its manifest is
    written it says `published` and stays, so the name is never taken again. A claim is
    only ever deleted by the publish that holds it (checked by its token) when it fails
    before its manifest, or by hand after an interrupted publish."""

    client: ObjectClient
    version: str
    token: str
    claimed: dt.datetime

    @classmethod
    def take(cls, client: ObjectClient, version: str) -> Claim:
        """Claim `version`, or VersionExists saying who has it."""
        claimed = dt.datetime.now(dt.UTC)
        claim = cls(client, version, secrets.token_hex(16), claimed)
        if client.put_bytes_if_absent(claim_key(version), claim._record("publishing")):
            return claim
        if _claim_state(client, version) == "published" or client.exists(manifest_key(version)):
            raise VersionExists(_exists_message(client, version))
        raise VersionExists(
            f"version {version!r} is being published to {client.describe(version)} by another "
            f"publish, or one was interrupted: once no publish of it runs, delete "
            f"{client.describe(claim_key(version))} to publish again"
        )

    def held(self) -> bool:
        """Whether the claim still holds this publish's token (not deleted, not replaced)."""
        try:
            record = _parse_claim(self.client.get_bytes(claim_key(self.version), limit=CLAIM_MAX))
        except ObjectNotFound:
            return False
        return record.get("token") == self.token

    def check_held(self) -> None:
        """Stop before writing anything more when the name is no longer ours."""
        if not self.held():
            raise VersionExists(
                f"the claim {self.client.describe(claim_key(self.version))} was deleted or "
                f"taken while this publish ran: it stops here and records nothing"
            )

    def mark_published(self) -> None:
        """The claim stays for good, saying the name was used (a reader needs nothing else)."""
        try:
            self.client.put_bytes(claim_key(self.version), self._record("published"))
        except SourceError as error:  # the manifest decides; the name stays claimed as it is
            log.warning("%s is published; its claim still says publishing: %s", self.version, error)

    def held_or_unknown(self) -> bool | None:
        """held(), or None when the store cannot say (then nothing is undone)."""
        try:
            return self.held()
        except SourceError:
            return None

    def release(self) -> None:
        """Free the name after a failure (the caller checked that it is still ours)."""
        with contextlib.suppress(SourceError):
            self.client.delete([claim_key(self.version)])

    def _record(self, state: str) -> bytes:
        return json.dumps(
            {"claimed": self.claimed.isoformat(), "state": state, "token": self.token}
        ).encode()


CLAIM_MAX = 4096  # a claim record is a few dozen bytes


def _parse_claim(data: bytes) -> dict[str, object]:
    """A claim record; an unreadable one reads as empty (a claim, but nobody's token)."""
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _claim_state(client: ObjectClient, version: str) -> str | None:
    try:
        return str(_parse_claim(client.get_bytes(claim_key(version), limit=CLAIM_MAX)).get("state"))
    except ObjectNotFound:
        return None


def _exists_message(client: ObjectClient, version: str) -> str:
    return (
        f"version {version!r} already exists at {client.describe(version)}: versions are "
        "immutable and their names are never reused (not even after prune), publish a new "
        "version"
    )


def settle(client: ObjectClient, index: VersionIndex) -> VersionIndex:
    """The index as the manifests say: a `publishing` entry whose manifest exists is
    published; one with neither a manifest nor a claim died before its manifest and goes;
    one whose name is still claimed is still publishing."""
    settled = index
    for entry in index.versions:
        if entry.state != "publishing":
            continue
        try:
            settled = settled.with_version(read_manifest(client, entry.version))
        except VersionMissing:
            if not client.exists(claim_key(entry.version)):
                settled = settled.without({entry.version})
        except SourceError as error:  # a garbage manifest: left as it is listed
            log.warning("cannot settle %s: %s", entry.version, one_line(error))
    return settled


@dataclass(frozen=True)
class Rebuilt:
    """What `versions --rebuild` made: the index, and each version it could not read, why."""

    index: VersionIndex
    skipped: tuple[tuple[str, str], ...]


def rebuild_index(client: ObjectClient, versions: Sequence[str] = ()) -> Rebuilt:
    """`index.json` made again from the manifests, for an index deleted or damaged by hand:
    of every `<version>/manifest.json` the store lists, or, where it cannot list, of the
    versions named (added to what the index still holds). A manifest that cannot be read is
    skipped and reported, the index rebuilt from the rest; a named version without one is
    an error before anything is written."""
    named = set(versions)
    found = named or {key.split("/")[0] for key in client.list_keys() if _is_manifest(key)}
    manifests: list[Manifest] = []
    skipped: list[tuple[str, str]] = []
    for version in sorted(found):
        try:
            manifests.append(read_manifest(client, version))
        except VersionMissing:
            if version in named:  # asked for by name: a mistake to say before writing
                raise
        except SourceError as error:  # garbage: skipped, reported, the rest rebuilt
            skipped.append((version, one_line(error)))
            log.warning("rebuild skips %s: %s", version, one_line(error))

    def rebuilt(now: VersionIndex) -> VersionIndex:
        kept = now.versions if named else [e for e in now.versions if e.state == "publishing"]
        unreadable = {version for version, _ in skipped}
        index = VersionIndex(versions=[e for e in kept if e.version not in unreadable])
        for manifest in manifests:
            index = index.with_version(manifest)
        return index

    _change_index(client, rebuilt, VersionIndex())  # a garbage index is replaced
    return Rebuilt(list_versions(client), tuple(skipped))


def _is_manifest(key: str) -> bool:
    version, _, name = key.partition("/")
    if name != MANIFEST_NAME:
        return False
    try:
        check_version(version)
    except ValueError:
        return False
    return True


def list_versions(client: ObjectClient) -> VersionIndex:
    """Every version at the location, settled (what `modelcache versions` shows)."""
    return settle(client, read_index(client))


INDEX_LOCK = ".claims/.index"  # not a version name: those start with a letter or digit
INDEX_LOCK_STALE_S = 60.0  # a lock this old was left by a publish that died
INDEX_LOCK_WAIT_S = 30.0


def _change_index(
    client: ObjectClient,
    change: Callable[[VersionIndex], VersionIndex],
    before: VersionIndex | None = None,
) -> None:
    """Read-modify-write the index under a lock (a conditional write), so that concurrent
    publishes and prunes never lose one another's entries; every write settles it."""
    deadline = time.monotonic() + INDEX_LOCK_WAIT_S
    stamp = json.dumps({"claimed": time.time()}).encode()
    while not client.put_bytes_if_absent(INDEX_LOCK, stamp):
        if _lock_age(client) > INDEX_LOCK_STALE_S:
            client.delete([INDEX_LOCK])
            continue
        if time.monotonic() > deadline:
            raise SourceError(
                f"{client.describe(INDEX_NAME)} stayed locked by another publish for "
                f"{INDEX_LOCK_WAIT_S:.0f}s (a lock older than {INDEX_LOCK_STALE_S:.0f}s is "
                f"taken over)"
            )
        time.sleep(0.1)
    try:
        try:
            index = read_index(client)  # as it is now, with what others added meanwhile
        except SourceError:
            if before is None:
                raise
            index = before  # garbage written since we checked: ours replaces it
        client.put_bytes(INDEX_NAME, change(settle(client, index)).to_json())
    finally:
        client.delete([INDEX_LOCK])


def _lock_age(client: ObjectClient) -> float:
    try:
        claimed = json.loads(client.get_bytes(INDEX_LOCK, limit=CLAIM_MAX))["claimed"]
        return time.time() - float(claimed)
    except ObjectNotFound:
        return 0.0  # released meanwhile: try again
    except (SourceError, ValueError, KeyError, TypeError):
        return float("inf")  # unreadable: nobody can be holding it properly


def claim_key(version: str) -> str:
    """Where a publish claims a version name (`.claims/` cannot be a version's prefix)."""
    return f".claims/{check_version(version)}"


def _upload(
    client: ObjectClient,
    files: list[tuple[str, Path]],
    version: str,
    claim: Claim,
    *,
    progress: Progress | None,
    on_file: Callable[[str, int], None] | None,
) -> Manifest:
    """Hash and upload each file while the claim is ours; the manifest of what the store
    now holds."""
    entries: list[ManifestFile] = []
    for relative, path in files:
        before = _identity(path)
        piece_size = piece_size_for(before[1])  # a size changed meanwhile is refused below
        digest = hash_file(path, piece_size=piece_size)
        entry = ManifestFile(
            path=relative,
            size=digest.size,
            sha256=digest.sha256,
            crc64=str(digest.crc64),
            pieces=pieces_of(digest, piece_size),
        )
        if on_file is not None:
            on_file(relative, entry.size)
        key = f"{version}/{relative}"
        claim.check_held()  # never write under a name another publish may have taken
        client.put_file(key, path, progress=progress)
        if _identity(path) != before:  # rewritten while hashed or sent: the hash may lie
            raise SourceError(
                f"{path} changed while it was being published; nothing was recorded for "
                f"{version!r}: publish again once it is stable"
            )
        uploaded = client.head(key)
        expected = client.expected_etag(path)  # the file is as hashed: its ctime is unchanged
        if expected is not None and uploaded.etag.strip('"').lower() != expected:
            raise SourceError(
                f"{client.describe(key)} holds other bytes than {path} (ETag {uploaded.etag}, "
                f"expected {expected}); nothing was recorded for {version!r}"
            )
        if uploaded.size != entry.size or (
            uploaded.crc64 is not None and uploaded.crc64 != digest.crc64
        ):
            raise SourceError(
                f"upload of {client.describe(key)} does not match the local file "
                f"(size {uploaded.size} vs {entry.size}, crc64 {uploaded.crc64} vs {digest.crc64})"
            )
        entries.append(entry)
        log.info("published %s (%d bytes)", client.describe(key), entry.size)
    return Manifest(version=version, created=dt.datetime.now(dt.UTC), files=tuple(entries))


def pieces_of(digest: Digest, piece_size: int) -> Pieces | None:
    """The manifest's pieces of a file hashed in `piece_size` pieces: none for a file of at
    most MIN_PIECE bytes (its own sha256 verifies its one piece)."""
    if digest.size <= MIN_PIECE:
        return None
    return Pieces(size=piece_size, sha256=digest.pieces)


def _identity(path: Path) -> tuple[int, int, int, int]:
    """What any write to a file changes: its ctime (no user can set it), size, inode, mtime."""
    stat = path.stat()
    return (stat.st_ctime_ns, stat.st_size, stat.st_ino, stat.st_mtime_ns)


def prune(client: ObjectClient, keep: int, protect: set[str] | None = None) -> list[str]:
    """Delete the oldest versions beyond `keep` (never a protected one); returns what was deleted.

    The manifest goes first, so a version being deleted is already invisible to agents; the
    claim stays, so the name is never published again with other bytes."""
    if keep < 1:
        raise SourceError("--keep must be at least 1")
    protected = protect or set()
    index = list_versions(client)
    newest_first = list(reversed(index.published))
    doomed = [v.version for v in newest_first[keep:] if v.version not in protected]
    for version in doomed:
        manifest = read_manifest(client, version)
        if _claim_state(client, version) != "published":  # published before claims were kept
            client.put_bytes(claim_key(version), json.dumps({"state": "published"}).encode())
        client.delete([manifest_key(version)])
        client.delete([f"{version}/{f.path}" for f in manifest.files])
        _change_index(client, partial(VersionIndex.without, versions={version}))
        log.info("pruned version %s from %s", version, client.url)
    return doomed
