"""The packages are layers, read from the code's own imports (docs/architecture.md):

    mediajobs   the application: CLI, submit, presets, dashboard, schedule firing, a box
    workers     processes that run jobs            stages    the media work
    pipeline    the engine: model, Redis state, client

An import goes down, never up: ``pipeline`` imports none of the others, ``workers`` does
not import the application, ``stages`` imports only the engine. No module imports itself
back through others. Every import counts, those inside function bodies and under
``TYPE_CHECKING`` too: an import moved into a function to dodge a cycle is still the same
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mediajobs", "pipeline", "workers", "stages")

# package -> the project packages it must not import
FORBIDDEN = {
    "pipeline": {"workers", "stages", "mediajobs"},
    "workers": {"mediajobs"},
    "stages": {"mediajobs", "workers"},
}


def project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The project modules ``name`` imports, anywhere in its file: {module: line}."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import x``, mod.
            subs = [f"{base}.{alias.name}" for alias in node.names]
            targets = [s for s in subs if s in modules] or [base]
        for target in targets:
            # ``import a.b.c`` of a name that is not a module: its nearest module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}, modules


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_package_imports_a_layer_above_it() -> None:
    graph, modules = import_graph()
    wrong = [
        f"{modules[name].relative_to(ROOT)}:{line} imports {target}"
        for name, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if target.split(".")[0] in FORBIDDEN.get(name.split(".")[0], set())
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycle_among_the_project_modules() -> None:
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_walk_sees_imports_in_function_bodies_and_relative_ones() -> None:
    graph, _ = import_graph()
    # mediajobs/cli.py imports the application's subcommands inside a function.
    assert "mediajobs.schedule_commands" in graph["mediajobs.cli"]
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None
