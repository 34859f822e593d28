"""The safetensors container, read and written without numpy or a copy of the data.

The runtime reads the header itself (8-byte little-endian length, a JSON header, then
the tensors back to back) so that it can validate every key, shape and dtype before it
reads a byte of data, and then read each tensor straight into its staging slot. The
writer is for tests, benchmarks and examples (safetensors' own torch writer needs numpy,
which an inference image need not have); files it writes open with `safetensors.safe_open`.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from modelcache.runtime.errors import SwapRefused
from modelcache.runtime.untrusted_json import json_object

# safetensors' own limit is 100 MB; a LoRA's header is a few hundred KB (2000 tensors),
# and parsing 100 MB of JSON costs seconds and gigabytes: an adapter gets 16 MiB.
MAX_HEADER_BYTES = 16 * 1024 * 1024
METADATA_KEY = "__metadata__"

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in the header; `begin`/`end` are byte offsets into the data section."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES[self.dtype]


@dataclass(frozen=True)
class Header:
    """A parsed header; `raw` is its bytes on disk (8-byte length included)."""

    raw: bytes
    tensors: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]

    @property
    def data_start(self) -> int:
        return len(self.raw)

    def in_file_order(self) -> list[TensorEntry]:
        return sorted(self.tensors.values(), key=lambda e: e.begin)


def read_header(handle: BinaryIO, file_size: int, *, where: str) -> Header:
    """Parse and check the header of an open file (positioned anywhere); `where` names it."""
    handle.seek(0)
    prefix = handle.read(8)
    if len(prefix) != 8:
        raise SwapRefused("format", f"{where}: {file_size} bytes is too short for safetensors")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES or 8 + length > file_size:
        raise SwapRefused("format", f"{where}: header length {length} does not fit the file")
    body = handle.read(length)
    if len(body) != length:
        raise SwapRefused("format", f"{where}: file ended inside the header")
    parsed = json_object(body, "format", f"{where}: header")
    metadata = parsed.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SwapRefused("format", f"{where}: __metadata__ must map strings to strings")
    tensors = {name: _entry(name, info, where) for name, info in parsed.items()}
    _check_layout(tensors, file_size - 8 - length, where)
    return Header(raw=prefix + body, tensors=tensors, metadata=metadata)


def _entry(name: str, info: object, where: str) -> TensorEntry:
    if not isinstance(info, dict):
        raise SwapRefused("format", f"{where}: entry {name!r} is not an object")
    dtype = DTYPES.get(str(info.get("dtype")))
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if dtype is None:
        raise SwapRefused(
            "dtype", f"{where}: tensor {name!r} has unknown dtype {info.get('dtype')}"
        )
    if not (isinstance(shape, list) and all(_count(d) for d in shape)):
        raise SwapRefused("format", f"{where}: tensor {name!r} has a bad shape {shape!r}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_count(o) for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise SwapRefused("format", f"{where}: tensor {name!r} has bad data_offsets {offsets!r}")
    entry = TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])
    expected = math.prod(entry.shape) * dtype.itemsize
    if entry.nbytes != expected:
        raise SwapRefused(
            "format",
            f"{where}: tensor {name!r} spans {entry.nbytes} bytes; "
            f"{entry.dtype_name}{list(entry.shape)} needs {expected}",
        )
    return entry


def _count(value: object) -> bool:
    """A non-negative JSON integer: not a bool (which Python counts as an int), not a float."""
    return type(value) is int and value >= 0


def _check_layout(tensors: Mapping[str, TensorEntry], data_size: int, where: str) -> None:
    """Tensors must tile the data section exactly: no gap, no overlap, nothing after."""
    position = 0
    for entry in sorted(tensors.values(), key=lambda e: e.begin):
        if entry.begin != position:
            raise SwapRefused(
                "format", f"{where}: tensor {entry.name!r} starts at {entry.begin}, not {position}"
            )
        position = entry.end
    if position != data_size:
        raise SwapRefused(
            "format", f"{where}: tensors cover {position} bytes of a {data_size}-byte data section"
        )


def byte_view(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor as a writable memoryview (no numpy, no copy).

    Valid only while `tensor` is alive: callers keep the tensor beside the view."""
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError("byte_view needs a contiguous CPU tensor")
    size = tensor.numel() * tensor.element_size()
    if size == 0:
        return memoryview(bytearray())
    return memoryview((ctypes.c_ubyte * size).from_address(tensor.data_ptr())).cast("B")


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file at `path` (a str or a path), tensors ordered as safetensors
    does: wider dtypes, then name."""
    ordered = sorted(tensors.items(), key=lambda kv: (-kv[1].element_size(), kv[0]))
    header: dict[str, object] = {}
    if metadata:
        header[METADATA_KEY] = dict(metadata)
    position = 0
    blobs: list[bytes] = []
    for name, tensor in ordered:
        data = tensor.detach().to("cpu").contiguous()
        raw = bytes(byte_view(data))
        header[name] = {
            "dtype": DTYPE_NAMES[data.dtype],
            "shape": list(data.shape),
            "data_offsets": [position, position + len(raw)],
        }
        position += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with Path(path).open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for raw in blobs:
            handle.write(raw)
