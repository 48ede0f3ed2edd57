"""The package's layers depend one way: each layer imports only from the layers below it.

Layers, bottom to top (siblings on one row never import each other, except on the bottom row of
small foundation modules)::

    config, device, distributed, checkpoint, amp, atomic, jsonio, original, progress, optional,
    inference_settings, run_directory, heap
    model | data
    evaluation | inference | testing
    training | app
    cli

Every ``import`` statement counts, including those inside functions (the CLI imports lazily).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "wavecl"
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "config",
        "device",
        "distributed",
        "checkpoint",
        "amp",
        "atomic",
        "jsonio",
        "original",
        "progress",
        "optional",
        "inference_settings",
        "run_directory",
        "heap",
    ),
    ("model", "data"),
    ("evaluation", "inference", "testing"),
    ("training", "app"),
    ("cli",),
)
ENTRY_POINTS = {"wavecl", "wavecl.__main__"}  # the public API and ``python -m wavecl`` may reach anything


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def component(module: str) -> str:
    """``wavecl.model.wavecl`` -> ``model``; ``wavecl.config`` -> ``config``."""
    return module.split(".")[1]


def rank(module: str) -> int:
    for index, names in enumerate(LAYERS):
        if component(module) in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def wavecl_imports(path: Path) -> set[str]:
    """Every ``wavecl.*`` module that ``path`` imports, at any depth of the file."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("wavecl."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "wavecl" or node.module.startswith("wavecl."):
                for alias in node.names:  # ``from wavecl.cli import train`` imports the module wavecl.cli.train
                    submodule = f"{node.module}.{alias.name}"
                    imported.add(submodule if is_module(submodule) or node.module == "wavecl" else node.module)
    return imported


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


@functools.cache
def import_graph() -> dict[str, set[str]]:
    return {module_name(path): wavecl_imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer() -> None:
    for module in import_graph():
        if module not in ENTRY_POINTS:
            rank(module)


def upward_imports(module: str, imported: set[str]) -> list[str]:
    """The modules of ``imported`` that sit on ``module``'s layer (another package) or above it."""
    return sorted(
        name
        for name in imported
        if component(name) != component(module) and not rank(name) == rank(module) == 0 and rank(name) >= rank(module)
    )


@pytest.mark.parametrize("module", sorted(set(import_graph()) - ENTRY_POINTS))
def test_no_upward_or_sideways_import(module: str) -> None:
    assert upward_imports(module, import_graph()[module]) == [], (
        f"{module} (layer {rank(module)}: {component(module)}) imports from its own layer or above; "
        "layers must import only from below"
    )


def test_no_import_cycle() -> None:
    graph = {module: {name for name in imports if name in import_graph()} for module, imports in import_graph().items()}
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycle = path[path.index(imported) :] + [imported]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """The walker finds lazy imports inside functions and ``from wavecl import x`` forms."""
    source = tmp_path / "example.py"
    source.write_text(
        "import os\nfrom wavecl.model.wavecl import WaveCL\n"
        "def f():\n    from wavecl.training import trainer\n    import wavecl.cli.common\n"
        "from wavecl import data\n",
        encoding="utf-8",
    )
    assert wavecl_imports(source) == {
        "wavecl.model.wavecl",
        "wavecl.training.trainer",
        "wavecl.cli.common",
        "wavecl.data",
    }
    assert upward_imports("wavecl.model.wavecl", {"wavecl.training.trainer", "wavecl.config"}) == [
        "wavecl.training.trainer"
    ]
    assert upward_imports("wavecl.evaluation.loop", {"wavecl.inference.predictor", "wavecl.data.types"}) == [
        "wavecl.inference.predictor"
    ]
