"""The package structure, read from the source: which module imports which.

Every ``import`` counts, wherever it stands: a function-level (lazy) import hides a cycle from
import time, it does not remove it. The rules (see /work/shared/design/architecture.md):

- no import cycle among ``service/`` modules;
- ``service/jobs/`` (the job records, requests, and sending) imports neither ``service.worker``
  nor ``service.pacs``: the API and the DIMSE listener send jobs without loading the worker;
- ``service.worker`` is a leaf: nothing else in ``service/`` imports it, and inside it only
  ``celery_app`` (the worker's composition root) imports the task modules;
- ``training/`` imports nothing from ``service/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TASK_MODULES = {
    "service.worker.training_tasks",
    "service.worker.evaluation_tasks",
    "service.worker.pacs_tasks",
}


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of ``package`` under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name ``module`` imports, at any depth of its source (relative ones made
    absolute); ``from a import b`` yields ``a`` and ``a.b``, as ``b`` may be a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports (its own ancestor packages left out:
    importing ``a.b.c`` runs ``a/b/__init__.py`` first, which is no dependency of ``a.b.c``)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in imported_names(name, path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                graph[name].add(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def edges_into(graph: dict[str, set[str]], sources: str, targets: tuple[str, ...]) -> list[str]:
    """``a -> b`` for every module ``a`` under ``sources`` that imports a ``b`` under a target."""
    return sorted(
        f"{module} -> {imported}"
        for module, imports in graph.items()
        if module == sources or module.startswith(sources + ".")
        for imported in imports
        if any(imported == t or imported.startswith(t + ".") for t in targets)
    )


@pytest.fixture(scope="module")
def service_graph() -> dict[str, set[str]]:
    return import_graph(REPO, "service")


def test_the_graph_sees_function_level_imports(service_graph: dict[str, set[str]]) -> None:
    # pacs_tasks imports the DICOMweb adapter inside a task body (after the worker's fork):
    # an import graph that missed it would pass every rule below without looking
    assert "service.pacs.dicomweb" in service_graph["service.worker.pacs_tasks"]


def test_no_import_cycle_in_service(service_graph: dict[str, set[str]]) -> None:
    assert cycles(service_graph) == []


def test_jobs_imports_neither_the_worker_nor_pacs(service_graph: dict[str, set[str]]) -> None:
    assert edges_into(service_graph, "service.jobs", ("service.worker", "service.pacs")) == []


def test_only_the_worker_app_imports_the_worker(service_graph: dict[str, set[str]]) -> None:
    outside = {m: i for m, i in service_graph.items() if not m.startswith("service.worker")}
    assert edges_into(outside, "service", ("service.worker",)) == []
    importers = {
        module
        for module, imports in service_graph.items()
        for task in TASK_MODULES
        if task in imports
    }
    assert importers == {"service.worker.celery_app"}


def test_training_imports_nothing_from_service() -> None:
    modules = module_names(REPO, "training")
    leaks = sorted(
        f"{module} -> {imported}"
        for module, path in modules.items()
        for imported in imported_names(module, path)
        if imported == "service" or imported.startswith("service.")
    )
    assert leaks == []
