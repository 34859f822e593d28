"""Every parser of untrusted bytes gives its result or its one error, whatever the input:
a manifest and an index from L3, a NodeCache spec from the API server, node.yaml."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelcache.agent.config import ConfigError, load_config
from modelcache.api.manifest import Manifest, VersionIndex
from modelcache.api.nodecache import NodeCacheSpec
from tests.strategies import json_values

values = json_values(
    st.sampled_from(["version", "files", "path", "size", "sha256", "crc64", "models"])
    | st.text(max_size=6),
    max_leaves=20,
)
HOSTILE = [b"[" * 100_000, b'{"version": ' + b"9" * 10_000 + b"}", b"\xff\xfe", b""]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | values.map(lambda v: json.dumps(v).encode()))
def test_manifest_and_index_parse_or_refuse(data: bytes) -> None:
    for parse in (Manifest.from_json, VersionIndex.from_json):
        with contextlib.suppress(ValidationError):
            parse(data)


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_manifests_are_refused(data: bytes) -> None:
    with pytest.raises(ValidationError):
        Manifest.from_json(data)


@settings(max_examples=300, deadline=None)
@given(values)
def test_a_nodecache_spec_parses_or_refuses(value: object) -> None:
    with contextlib.suppress(ValidationError):
        NodeCacheSpec.model_validate(value)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200) | values.map(yaml.safe_dump))
def test_node_yaml_loads_or_is_one_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    message = ""
    try:
        load_config(path)
    except ConfigError as error:
        message = str(error)
    assert "\n" not in message
