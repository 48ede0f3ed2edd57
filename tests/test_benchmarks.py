"""The benchmark scripts still import what they use: a script is run by hand, rarely, so a moved or renamed
name in wavecl would otherwise surface only when someone next measures."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def imported_names(path: Path) -> list[tuple[str, str | None]]:
    """``(module, name)`` of every ``from wavecl... import name`` / ``from <sibling script> import name`` and
    ``(module, None)`` of every ``import wavecl...`` in ``path``, module level or inside functions."""
    siblings = {script.stem for script in SCRIPTS}
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in {"wavecl", *siblings}:
            found.extend((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names if alias.name.split(".")[0] == "wavecl")
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_name_a_benchmark_imports_exists(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for module_name, name in imported_names(script):
        module = importlib.import_module(module_name)
        if name is not None:
            assert hasattr(module, name) or importlib.util.find_spec(f"{module_name}.{name}") is not None, (
                f"{script.name} imports {name} from {module_name}, which has no such name"
            )


def test_the_scan_sees_imports_inside_functions(tmp_path):
    script = tmp_path / "bench_example.py"
    script.write_text("def main():\n    from wavecl.evaluation.datasets import evaluate_saved_predictions\n")
    assert imported_names(script) == [("wavecl.evaluation.datasets", "evaluate_saved_predictions")]
