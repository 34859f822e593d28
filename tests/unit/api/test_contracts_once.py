"""Each contract is defined once, in api/, and each package says what it offers.

The resource names, the cache root's default and the event log's name are spelled out only
in api/ (a second spelling is a second place to change); every kind of cache event is named
as the log writes it and is the kind of some event; the public faces of api, agent, runtime
and operator list what they offer, and a name exported by two of them is one object."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import modelcache
from modelcache.api import EventKind
from modelcache.api.events import CacheEvent

PRODUCT = Path(modelcache.__file__).parent
# The test harness (leaving the wheel) and `modelcache dev`, which drives it.
HARNESS = ("testing/",)
SPELLED_ONCE = {
    "modelversions": "api/k8s.py",
    "nodecaches": "api/k8s.py",
    "modelcache.io": "api/k8s.py",
    "v1alpha1": "api/k8s.py",
    "/var/lib/modelcache": "api/layout.py",
    "events.jsonl": "api/layout.py",
}
FACES = ("modelcache.api", "modelcache.agent", "modelcache.agent.kube", "modelcache.runtime")
FACES_ON_FIRST_USE = ("modelcache.operator",)


def _string_constants(tree: ast.Module) -> list[ast.Constant]:
    """Every str literal of a module that is not a docstring."""
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_each_contract_name_is_spelled_out_once_in_api() -> None:
    found: dict[str, list[str]] = {name: [] for name in SPELLED_ONCE}
    for path in sorted(PRODUCT.rglob("*.py")):
        relative = path.relative_to(PRODUCT).as_posix()
        if relative.startswith(HARNESS):
            continue
        for constant in _string_constants(ast.parse(path.read_text())):
            for name in SPELLED_ONCE:
                if name in constant.value:
                    found[name].append(relative)
    assert found == {name: [where] for name, where in SPELLED_ONCE.items()}


def _event_classes() -> set[type[CacheEvent]]:
    importlib.import_module("modelcache.agent")  # the agent's events
    importlib.import_module("modelcache.runtime.events")  # the runtime's
    found: set[type[CacheEvent]] = set()
    pending = [CacheEvent]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.add(sub)
            pending.append(sub)
    return {cls for cls in found if "kind" in vars(cls)}


def test_every_event_kind_reads_as_the_log_writes_it_and_is_used() -> None:
    assert [kind.name for kind in EventKind] == [kind.value for kind in EventKind]
    used = {cls.kind for cls in _event_classes()}
    assert set(EventKind) == used, f"kinds no event has: {set(EventKind) - used}"


@pytest.mark.parametrize("name", FACES + FACES_ON_FIRST_USE)
def test_a_face_lists_what_it_offers_and_each_name_is_there(name: str) -> None:
    face = importlib.import_module(name)
    offered = face.__all__
    assert offered, f"{name} offers nothing"
    assert len(set(offered)) == len(offered)
    missing = [attr for attr in offered if getattr(face, attr, None) is None]
    assert missing == []


def test_a_name_offered_by_two_faces_is_one_thing() -> None:
    """e.g. the agent's config error and its Kubernetes client's are two names, not one."""
    owners: dict[str, tuple[str, object]] = {}
    clashes = []
    for name in FACES + FACES_ON_FIRST_USE:
        face = importlib.import_module(name)
        for attr in face.__all__:
            value = getattr(face, attr)
            if attr in owners and owners[attr][1] is not value:
                clashes.append(f"{attr}: {owners[attr][0]} and {name}")
            owners.setdefault(attr, (name, value))
    assert clashes == []


def test_the_operators_planner_imports_without_kopf_or_kubernetes() -> None:
    """The operator's face loads kopf and kubernetes only for the names that need them."""
    probe = (
        "import sys\n"
        "from modelcache.operator import ClusterView, plan_rollout\n"
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules))\n"
        "from modelcache.operator import Reconciler\n"
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == ["[]", "['kubernetes']"]
