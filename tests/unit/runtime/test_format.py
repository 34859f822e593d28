"""The safetensors reader and writer agree with the safetensors library."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from modelcache.runtime import SwapRefused, write_safetensors
from modelcache.runtime.safetensors_format import read_header


def test_written_files_open_with_safetensors(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5).half(),
        "c": torch.randn(2, 2).to(torch.bfloat16),
    }
    path = tmp_path / "x.safetensors"
    write_safetensors(path, tensors, {"r": "4"})
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"r": "4"}
        for name, tensor in tensors.items():
            assert torch.equal(handle.get_tensor(name), tensor)
    with path.open("rb") as handle:
        header = read_header(handle, path.stat().st_size, where="x")
    assert header.metadata == {"r": "4"}
    assert header.tensors["c"].dtype == torch.bfloat16
    assert header.tensors["a"].shape == (3, 4)


def test_a_gap_in_the_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"a": torch.zeros(4)})
    with path.open("ab") as handle:
        handle.write(b"\0" * 4)
    with path.open("rb") as handle, pytest.raises(SwapRefused, match="tensors cover 16 bytes"):
        read_header(handle, path.stat().st_size, where="x")
