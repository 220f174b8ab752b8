"""The import graph of ``flyjobs/`` (issue 18): no import cycle but the deliberate lazy links,
and every import made inside a function says why.

Function-local imports count as edges (a cycle they close is still a cycle, only deferred);
imports under ``if TYPE_CHECKING`` do not (they never run). The graph is read from the source
with `ast`, so nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import flyjobs

ROOT = Path(flyjobs.__file__).parent
#: Most modules allowed in import cycles, all cycles together: the lazy link
#: `flyjobs._calls.handle` ⇢ `flyjobs._calls.detach` (a detached call is a `Call`) is the one.
MAX_MODULES_IN_CYCLES = 4


@dataclass(frozen=True)
class LocalImport:
    module: str
    line: int
    statement: str
    commented: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The modules an import may load: the module, and each name as a submodule."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - (node.level - 1)])
        module = f"{base}.{node.module}" if node.module else base
    else:
        module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def _under_type_checking(tree: ast.Module) -> set[int]:
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }


def _read_graph() -> tuple[dict[str, set[str]], list[LocalImport]]:
    edges: dict[str, set[str]] = {}
    local: list[LocalImport] = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        skipped = _under_type_checking(tree)
        edges[module] = set()

        def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
            for child in ast.iter_child_nodes(node):
                yield child, in_function
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                yield from visit(child, inner)

        for node, in_function in visit(tree, False):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skipped:
                continue
            edges[module].update(_targets(node, package))
            if in_function:
                near = lines[max(node.lineno - 2, 0) : node.lineno]
                commented = any("#" in line for line in near)
                local.append(LocalImport(module, node.lineno, ast.unparse(node), commented))
    graph = {m: {t for t in targets if t in edges and t != m} for m, targets in edges.items()}
    return graph, local


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_at_most_the_deliberate_lazy_link_is_a_cycle() -> None:
    graph, _ = _read_graph()
    cycles = _cycles(graph)
    assert sum(map(len, cycles)) <= MAX_MODULES_IN_CYCLES, cycles


def test_every_function_local_import_says_why() -> None:
    _, local = _read_graph()
    silent = [f"{i.module}:{i.line} {i.statement}" for i in local if not i.commented]
    assert not silent, "a comment on the line or the line above says why:\n" + "\n".join(silent)


def test_the_graph_reader_sees_cycles_and_silent_imports() -> None:
    # The two checks above pass on a graph that reads nothing: this one shows they can fail.
    graph, local = _read_graph()
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "flyjobs._wire.machine" in graph["flyjobs.worker"]
    assert any(i.module == "flyjobs.worker" and i.commented for i in local)
    handle = graph["flyjobs._calls.handle"]
    assert "flyjobs._calls.detach" in handle  # function-local, still an edge
