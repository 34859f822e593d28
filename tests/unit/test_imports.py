"""No import circle inside modelcache: each module can be imported on its own, and a plain
data type lives below everything that uses it (the layering itself: `lint-imports`)."""

from __future__ import annotations

import grimp


def test_no_module_of_modelcache_imports_itself_back() -> None:
    graph = grimp.build_graph("modelcache", exclude_type_checking_imports=True)
    circles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circles.append(" -> ".join((module, *back)))
    assert circles == [], "import circles (lazy imports count too):\n" + "\n".join(circles)
