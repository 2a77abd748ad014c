"""The serve package's import graph (as grimp reads it, imports inside functions included): no cycle, and
the application factory is imported by nothing in the package but its entry points (the package, the
workers' factory and the Ray replica), so a router never reaches back into the module that wires it."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

import grimp

PACKAGE = "modelcycle.serve"


def serve_graph() -> tuple[grimp.ImportGraph, set[str]]:
    graph = grimp.build_graph("modelcycle", cache_dir=None)
    modules = {module for module in graph.modules if module == PACKAGE or module.startswith(f"{PACKAGE}.")}
    return graph, modules


def test_the_serve_package_has_no_import_cycle() -> None:
    graph, modules = serve_graph()
    imports = {module: graph.find_modules_directly_imported_by(module) & modules for module in modules}
    try:
        TopologicalSorter(imports).prepare()
    except CycleError as error:
        raise AssertionError(f"import cycle in {PACKAGE}: {' -> '.join(error.args[1])}") from None


def test_only_the_entry_points_import_the_app_factory() -> None:
    graph, _ = serve_graph()
    importers = graph.find_modules_that_directly_import(f"{PACKAGE}.app")
    assert importers <= {PACKAGE, f"{PACKAGE}.factory", f"{PACKAGE}.ray_app"}, importers
