"""The filesystem layer under store and sources: what both need from a disk, and nothing else.

- reading files we do not own, safely: `read_capped` (capped, never blocking on a FIFO);
- durable writes: fsync before a rename makes a file visible, and of the directory after;
  `atomic_write` is the one crash-safe writer (a stream; `write_atomic` for small bytes);
- checksums: `StreamHasher`, `hash_file` (size, sha256, CRC-64/XZ in one pass), and
  `OrderedHasher`, which hashes a file in order while its parts are written out of order.

It imports nothing else of modelcache, so every other package may use it. Import from
here: the modules behind this face are private.
"""

from modelcache.fs._checksum import READ_CHUNK, Digest, StreamHasher, crc64_xz, hash_file
from modelcache.fs._durable import (
    DELETING_PREFIX,
    TMP_SUFFIX,
    atomic_write,
    fsync_dir,
    fsync_file,
    link_atomic,
    make_dirs,
    remove_tree,
    symlink_atomic,
    temp_prefix,
    token,
    write_all,
    write_atomic,
)
from modelcache.fs._ordered_hash import OrderedHasher
from modelcache.fs._reading import (
    FileRefused,
    NotARegularFile,
    TooLarge,
    is_regular,
    kind_of,
    read_capped,
)

__all__ = [
    "DELETING_PREFIX",
    "READ_CHUNK",
    "TMP_SUFFIX",
    "Digest",
    "FileRefused",
    "NotARegularFile",
    "OrderedHasher",
    "StreamHasher",
    "TooLarge",
    "atomic_write",
    "crc64_xz",
    "fsync_dir",
    "fsync_file",
    "hash_file",
    "is_regular",
    "kind_of",
    "link_atomic",
    "make_dirs",
    "read_capped",
    "remove_tree",
    "symlink_atomic",
    "temp_prefix",
    "token",
    "write_all",
    "write_atomic",
]
