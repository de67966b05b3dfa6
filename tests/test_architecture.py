"""The package's layering, read from the source with ``ast``: lower layers never import higher ones, no module
imports itself back through a cycle, and every module imports in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "coca_video"
LAYERS = [  # a module may import its own layer and the ones above it in this list, never the ones below
    {"errors", "storage", "io", "config", "distributed", "tokenizer", "video"},
    {"model", "transforms"},
    {"runtime", "data", "metrics", "caption_metrics", "ptb_tokenize", "prompts", "zero_shot", "api"},
    {"scoring", "training", "report"},
    {"search"},  # the search library: rows, rank (one tie rule), index, queries; cli and serve use it
    {"engines"},
    {"serve"},  # the server of a library: search's rows and ranking behind HTTP, run by tasks.serve
    {"tasks"},
    {"cli", "__main__"},  # __main__: the console script, which loads cli
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """coca_video modules ``path`` imports (absolute names), at any depth of the file (lazy imports count)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("coca_video"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names if is_module(f"{target}.{alias.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("coca_video"))
    return found


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{module}: no layer assigned (add its top-level name to LAYERS)")


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_import_from_a_lower_layer_to_a_higher_one():
    wrong = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
             for module, targets in all_modules().items() if module != "coca_video"
             for target in targets if target != "coca_video" and layer(target) > layer(module)]
    assert not wrong, "\n".join(wrong)


def test_model_does_not_import_data_and_generate_does_not_know_coca():
    modules = all_modules()
    assert not [t for m, ts in modules.items() if m.startswith("coca_video.model") for t in ts
                if t.startswith("coca_video.data")]
    assert not any(t.startswith("coca_video.model.coca") for t in modules["coca_video.model.generate"])


def test_no_import_cycles_between_modules():
    """Module-to-module imports form no cycle (a package's own __init__ re-exporting its modules is not an edge
    back from them)."""
    modules = all_modules()
    graph = {m: {t for t in ts if t in modules and t != m and not m.startswith(t + ".")} for m, ts in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(target):] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *all_modules()], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
