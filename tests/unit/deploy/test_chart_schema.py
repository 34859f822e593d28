"""values.schema.json keeps in step with values.yaml: every value typed, no stale entry,
every object of ours closed (so helm names a misspelled key), the defaults of the right
type; and a maxRate the schema admits is one the agent's --max-rate parser takes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import yaml
from hypothesis import given

from modelcache.cli.options import pull_options

CHART = Path(__file__).resolve().parents[3] / "helm" / "modelcache"
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}

Schema = dict[str, Any]


def load_schema() -> Schema:
    schema: Schema = json.loads((CHART / "values.schema.json").read_text())
    return schema


def load_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def resolve(node: Schema, root: Schema) -> Schema:
    """`node`, or what its local `$ref` ("#/definitions/x") points at."""
    while "$ref" in node:
        path = node["$ref"].removeprefix("#/").split("/")
        target: Any = root
        for part in path:
            target = target[part]
        node = target
    return node


def type_problem(value: Any, node: Schema, where: str) -> str | None:
    """Why `value` is not of the schema's type(s) at `where`, or None."""
    declared = node.get("type")
    if declared is None:
        allowed = node.get("enum")
        return None if allowed is None or value in allowed else f"{where}: {value!r} not in enum"
    names = [declared] if isinstance(declared, str) else declared
    for name in names:
        bool_as_number = isinstance(value, bool) and name in ("integer", "number")
        if isinstance(value, JSON_TYPES[name]) and not bool_as_number:
            return None
    return f"{where}: the default {value!r} is not {names}"


def value_problems(values: dict[str, Any], node: Schema, root: Schema, where: str) -> list[str]:
    """Each value of values.yaml that the schema does not type, or types otherwise."""
    problems = []
    properties = node.get("properties", {})
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in properties:
            problems.append(f"{path} is in values.yaml but not in values.schema.json")
            continue
        child = resolve(properties[key], root)
        problem = type_problem(value, child, path)
        if problem:
            problems.append(problem)
        elif isinstance(value, dict) and "properties" in child:
            problems += value_problems(value, child, root, path)
    return problems


def stale_entries(values: dict[str, Any], node: Schema, where: str) -> list[str]:
    """Schema entries of the chart's own tree (not a shared Kubernetes type behind a $ref)
    that values.yaml no longer has."""
    problems = []
    for key, child in node.get("properties", {}).items():
        path = f"{where}.{key}" if where else key
        if key not in values:
            problems.append(f"{path} is in values.schema.json but not in values.yaml")
        elif "$ref" not in child and isinstance(values[key], dict):
            problems += stale_entries(values[key], child, path)
    return problems


def open_objects(node: Any, where: str) -> list[str]:
    """Objects with named properties that accept any other key (a typo would pass)."""
    found = []
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            found.append(where or "/")
        for key, child in node.items():
            found += open_objects(child, f"{where}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += open_objects(child, f"{where}/{index}")
    return found


def test_every_value_is_typed_and_every_schema_entry_is_a_value() -> None:
    schema, values = load_schema(), load_values()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    problems = value_problems(values, schema, schema, "") + stale_entries(values, schema, "")
    assert not problems, "\n".join(problems)


def test_every_object_with_named_keys_refuses_unknown_ones() -> None:
    assert open_objects(load_schema(), "") == []


def test_the_readers_of_this_test_find_what_they_look_for() -> None:
    """The checks above do fail: on a value missing from the schema, a stale schema entry,
    a wrong default and an open object."""
    schema: Schema = {
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
            "c": {"$ref": "#/definitions/n"},
            "gone": {"type": "string"},
        },
        "additionalProperties": False,
        "definitions": {"n": {"type": "number"}},
    }
    values = {"a": {"b": "two", "x": 1}, "c": 0.5}
    assert value_problems(values, schema, schema, "") == [
        "a.b: the default 'two' is not ['integer']",
        "a.x is in values.yaml but not in values.schema.json",
    ]
    assert stale_entries(values, schema, "") == [
        "gone is in values.schema.json but not in values.yaml"
    ]
    assert open_objects(schema, "") == ["/properties/a"]
    assert type_problem(True, {"type": "integer"}, "t") is not None, "a bool is no count"


MAX_RATE = load_schema()["properties"]["agent"]["properties"]["maxRate"]


@given(st.from_regex(MAX_RATE["pattern"], fullmatch=True))
def test_a_max_rate_the_schema_admits_is_one_the_agent_starts_with(rate: str) -> None:
    """The chart passes a non-empty maxRate as `--max-rate`: helm must not admit a value
    that would stop every agent at start-up (not a size, or a cap of 0 bytes/s)."""
    if rate:
        options = pull_options(16, "8M", rate)
        assert options.bandwidth_limit is not None
        assert options.bandwidth_limit >= 1


def test_the_max_rate_pattern_refuses_a_zero_cap_and_words() -> None:
    for refused in ("0", "0.5", "0M", "fast", "8 M", "-1M"):
        assert not re.fullmatch(MAX_RATE["pattern"], refused), refused
    assert MAX_RATE["minimum"] == 1, "an integer cap of at least 1 byte/s"


DOCS = CHART.parents[1] / "docs" / "chart.md"
SHARED_TYPES = frozenset({"resources"})  # Kubernetes' own type: documented as a whole


def documented_paths(values: dict[str, Any], node: Schema, root: Schema, where: str) -> set[str]:
    """The values docs/chart.md's table must list: each leaf, and each map or Kubernetes
    type as a whole."""
    paths = set()
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        child = resolve(node["properties"][key], root)
        if isinstance(value, dict) and "properties" in child and key not in SHARED_TYPES:
            paths |= documented_paths(value, child, root, path)
        else:
            paths.add(path)
    return paths


def test_the_docs_table_lists_every_value() -> None:
    schema = load_schema()
    table = set(re.findall(r"^\| `(\w+(?:\.\w+)+)` \|", DOCS.read_text(), re.MULTILINE))
    assert table == documented_paths(load_values(), schema, schema, "")
