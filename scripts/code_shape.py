"""The shape of the package, for reviews: the longest functions, the largest modules, and import cycles.

    python scripts/code_shape.py [PACKAGE_DIR]

Cycles are counted twice: among imports at module level (what Python runs on import), and among all imports,
including those inside functions (which still tie two modules together for a reader).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module, package: str, top_level_only: bool) -> set[str]:
    found = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # `if TYPE_CHECKING:` imports nothing at run time
            continue
        if isinstance(node, ast.ImportFrom) and node.module == package:  # `from pkg import module`
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(package))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "granary_flows").resolve()
    package = root.name
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    functions = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    print("longest functions (lines, including docstrings):")
    for lines, name in sorted(functions, reverse=True)[:5]:
        print(f"  {lines:4d}  {name}")
    print("largest modules (lines):")
    sizes = sorted(((len(p.read_text().splitlines()), n) for n, p in modules.items()), reverse=True)
    for lines, name in sizes[:5]:
        print(f"  {lines:4d}  {name}")
    for label, top_level_only in (("module-level imports", True), ("all imports", False)):
        graph = {}
        for name, path in modules.items():
            targets = imports(ast.parse(path.read_text()), package, top_level_only)
            graph[name] = {t for t in targets if t in modules and t != name}
        found = cycles(graph)
        print(f"import cycles among {label}: {len(found)}")
        for component in found:
            print("  " + " <-> ".join(component))


if __name__ == "__main__":
    main()
