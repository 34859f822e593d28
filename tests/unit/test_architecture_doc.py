"""docs/architecture.md and the layering check cannot drift apart.

The layers `lint-imports` enforces (pyproject.toml's importlinter contract) are the ones
the page draws, in the same order with the same separators; the page has one paragraph
per package (or top-level module) of modelcache/, in layer order; and the contract leaves
none out.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
PACKAGE = "modelcache"
_SIBLINGS = re.compile(r"\s*([|:])\s*")
_HEADING = re.compile(r"^### `modelcache\.([a-z_]+)`\s*$")
_DESCRIPTION = re.compile(r"\s{2,}")  # a layer's line: the layer, two spaces, what it is


def normalize_layer(layer: str) -> str:
    """`modelcache.a | modelcache.b` -> `a | b`: the short names, the separators kept
    (`|`: independent siblings, `:` siblings that may import each other)."""
    parts = _SIBLINGS.split(layer.strip())
    return " ".join(p.removeprefix(f"{PACKAGE}.") if i % 2 == 0 else p for i, p in enumerate(parts))


def names_in(layer: str) -> list[str]:
    return _SIBLINGS.split(layer)[::2]


def contract_layers() -> list[str]:
    """The layers of pyproject's one importlinter `layers` contract, top first."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [normalize_layer(layer) for layer in contract["layers"]]


def section(text: str, heading: str) -> list[str]:
    """The lines under `## heading` up to the next `## `."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def drawn_layers(lines: list[str]) -> list[str]:
    """The layers in the first ```text block of `lines`, one per line, top first."""
    start = lines.index("```text") + 1
    end = lines.index("```", start)
    return [
        normalize_layer(_DESCRIPTION.split(line.strip(), maxsplit=1)[0])
        for line in lines[start:end]
        if line.strip()
    ]


def packages_on_disk() -> set[str]:
    """modelcache's packages and top-level modules (each a unit of the layering), less the
    package's own `__init__` and `__main__`."""
    root = REPO / PACKAGE
    modules = {p.stem for p in root.glob("*.py")} - {"__init__", "__main__"}
    return {p.parent.name for p in root.glob("*/__init__.py")} | modules


def test_the_page_draws_the_layers_the_import_check_enforces() -> None:
    drawn = drawn_layers(section(DOC.read_text(), "Layers"))
    assert drawn == contract_layers()


def test_the_page_has_one_paragraph_per_package_in_layer_order() -> None:
    headings = [
        found[1]
        for line in section(DOC.read_text(), "Packages, top to bottom")
        if (found := _HEADING.match(line))
    ]
    assert sorted(headings) == sorted(packages_on_disk())
    layer_of = {name: i for i, layer in enumerate(contract_layers()) for name in names_in(layer)}
    order = [layer_of[name] for name in headings]
    assert order == sorted(order), f"packages out of layer order: {headings}"


def test_the_contract_layers_every_package_and_names_no_other() -> None:
    layered = [name for layer in contract_layers() for name in names_in(layer)]
    assert len(layered) == len(set(layered)), f"a package in two layers: {layered}"
    assert set(layered) == packages_on_disk()


_names = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
_layers = st.lists(
    st.tuples(st.lists(_names, min_size=1, max_size=3), st.sampled_from(["|", ":"])),
    min_size=1,
    max_size=6,
)


@given(_layers, st.text(alphabet="abc `|:()-", max_size=30))
def test_a_drawn_block_reads_back_as_the_contract_it_draws(
    layers: list[tuple[list[str], str]], description: str
) -> None:
    contract = [f" {sep} ".join(f"{PACKAGE}.{n}" for n in names) for names, sep in layers]
    drawn = [
        f"{normalize_layer(layer):<28}  {description}".rstrip() if description.strip() else layer
        for layer in contract
    ]
    block = ["intro", "```text", *drawn, "```", "after"]
    assert drawn_layers(block) == [normalize_layer(layer) for layer in contract]
