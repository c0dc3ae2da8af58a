"""`${...}` references in pipeline steps, and `when:` conditions, resolved without evaluating any code.

A reference names a pipeline argument (`${args.scene}`), an earlier step's results (`${steps.ndvi.results.ndvi.href}`,
`${steps.ndvi.results[0].href}`, `${steps.stats.value.mean}`), or, in a step that maps over a list, the current item
(`${item}`) and its position (`${index}`). A string that is exactly one reference takes the referenced value with
its type; a reference inside a longer string is written into it as text.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from granary_flows.contract import as_text
from granary_flows.errors import ReferenceProblem

REFERENCE = re.compile(r"\$\{([^}]*)\}")
_TOKEN = re.compile(r"\.?([A-Za-z_][\w-]*)|\[(\d+)\]")
ROOTS = ("args", "steps", "item", "index")


@dataclass(frozen=True)
class Reference:
    """One parsed `${...}`: its text as written and its path, e.g. `("steps", "ndvi", "results", 0, "href")`."""

    text: str
    path: tuple[str | int, ...]

    @property
    def root(self) -> str | int:
        return self.path[0]

    @property
    def step(self) -> str | None:
        return str(self.path[1]) if self.root == "steps" and len(self.path) > 1 else None

    @property
    def argument(self) -> str | None:
        return str(self.path[1]) if self.root == "args" and len(self.path) > 1 else None

    def __str__(self) -> str:
        return f"${{{self.text}}}"


class Mapped(list[Any]):
    """The per-item results of a step that mapped over a list, in item order.

    A path into it that starts with a name is followed into every item (`${steps.ndvi.results.ndvi.href}` is the
    list of each tile's NDVI); one that starts with an index picks an item (`${steps.ndvi[0].value}`).
    """


def parse(text: str) -> Reference:
    """The reference inside `${` and `}`.

    Example:
        >>> parse("steps.ndvi.results[0].href").path
        ('steps', 'ndvi', 'results', 0, 'href')
    """
    expression = text.strip()
    path: list[str | int] = []
    position = 0
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None or (match.group(0).startswith(".") and not path):
            raise ReferenceProblem(f"${{{text}}}: cannot read this reference at {expression[position:]!r}")
        path.append(int(match.group(2)) if match.group(2) is not None else match.group(1))
        position = match.end()
    if not path or path[0] not in ROOTS:
        raise ReferenceProblem(f"${{{text}}}: a reference starts with one of {', '.join(ROOTS)}")
    if path[0] in ("args", "steps") and (len(path) < 2 or not isinstance(path[1], str)):
        raise ReferenceProblem(f"${{{text}}}: name the {'argument' if path[0] == 'args' else 'step'} after {path[0]}.")
    if path[0] == "index" and len(path) > 1:
        raise ReferenceProblem(f"${{{text}}}: index is a number and has no parts")
    return Reference(expression, tuple(path))


def references_in(value: Any) -> list[Reference]:
    """Every reference in a value, however deep in lists and mappings."""
    if isinstance(value, str):
        return [parse(found) for found in REFERENCE.findall(value)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in references_in(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in references_in(item)]
    return []


def whole_reference(value: Any) -> Reference | None:
    """The reference a value is made of alone, which keeps the referenced value's type."""
    if isinstance(value, str):
        match = REFERENCE.fullmatch(value.strip())
        if match:
            return parse(match.group(1))
    return None


def resolve(value: Any, scope: dict[str, Any]) -> Any:
    """`value` with every reference replaced from `scope` (`args`, `steps`, and `item`/`index` in a mapped step).

    Raises:
        ReferenceProblem: naming the reference that resolves to nothing.
    """
    if isinstance(value, dict):
        return {key: resolve(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, scope) for item in value]
    if not isinstance(value, str):
        return value
    whole = whole_reference(value)
    if whole is not None:
        return lookup(whole, scope)
    return REFERENCE.sub(lambda match: as_text(lookup(parse(match.group(1)), scope)), value)


def lookup(reference: Reference, scope: dict[str, Any]) -> Any:
    if reference.root not in scope:
        raise ReferenceProblem(f"{reference}: there is no {reference.root} here")
    return _follow(scope[reference.root], reference.path[1:], reference, str(reference.root))


def _follow(value: Any, path: tuple[str | int, ...], reference: Reference, where: str) -> Any:
    if not path:
        return list(value) if isinstance(value, Mapped) else value
    part, rest = path[0], path[1:]
    if isinstance(value, Mapped) and isinstance(part, str):
        return [_follow(item, path, reference, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(part, int):
        if not isinstance(value, list) or part >= len(value):
            size = f"has {len(value)} item(s)" if isinstance(value, list) else "is not a list"
            raise ReferenceProblem(f"{reference}: {where} {size}, no [{part}]")
        return _follow(value[part], rest, reference, f"{where}[{part}]")
    if isinstance(value, list) and all(isinstance(item, dict) and "href" in item for item in value):
        named = [item for item in value if item.get("title") == part]  # results by their declared output name
        if not named:
            titles = ", ".join(str(item.get("title")) for item in value) or "none"
            raise ReferenceProblem(f"{reference}: {where} has no result named {part!r} (there are: {titles})")
        return _follow(named[0], rest, reference, f"{where}.{part}")
    if not isinstance(value, dict) or part not in value or value[part] is None:
        raise ReferenceProblem(f"{reference}: {where} has no {part!r}")
    return _follow(value[part], rest, reference, f"{where}.{part}")


# `when:` conditions: comparisons, `in`, `and`/`or`/`not` over references and literals, read with Python's parser
# and evaluated here node by node, so that no code a task file holds is ever run.
_COMPARISONS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_LITERAL_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def condition_references(condition: str | bool) -> list[Reference]:
    """The references of a condition, after checking that it only compares (raises `ReferenceProblem` otherwise)."""
    if isinstance(condition, bool):
        return []
    tree, references = _parse_condition(condition)
    _evaluate(tree.body, None, condition)
    return references


def holds(condition: str | bool, scope: dict[str, Any]) -> bool:
    """Whether a `when:` condition is true for these arguments and step results.

    Example:
        >>> holds("${args.n} > 2 and 'b' in ${args.tags}", {"args": {"n": 3, "tags": ["a", "b"]}})
        True
    """
    if isinstance(condition, bool):
        return condition
    tree, references = _parse_condition(condition)
    values = {f"_ref{index}": lookup(reference, scope) for index, reference in enumerate(references)}
    return bool(_evaluate(tree.body, values, condition))


def _parse_condition(condition: str) -> tuple[ast.Expression, list[Reference]]:
    references: list[Reference] = []

    def placeholder(match: re.Match[str]) -> str:
        references.append(parse(match.group(1)))
        return f" _ref{len(references) - 1} "

    try:
        return ast.parse(REFERENCE.sub(placeholder, condition).strip(), mode="eval"), references
    except SyntaxError as err:
        raise ReferenceProblem(f"when: {condition!r} is not a condition: {err.msg}") from err


def _evaluate(node: ast.AST, values: dict[str, Any] | None, condition: str) -> Any:
    """The node's value; with `values` None, only checks that every node is one a condition may hold."""

    def each(child: ast.AST) -> Any:
        return _evaluate(child, values, condition)

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _LITERAL_NAMES:
            return _LITERAL_NAMES[node.id]
        if node.id.startswith("_ref"):
            return None if values is None else values[node.id]
    elif isinstance(node, (ast.List, ast.Tuple)):
        return [each(item) for item in node.elts]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        operand = each(node.operand)
        if values is None:
            return None
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    elif isinstance(node, ast.BoolOp):
        operands = [each(value) for value in node.values]
        if values is None:
            return None
        return all(operands) if isinstance(node.op, ast.And) else any(operands)
    elif isinstance(node, ast.Compare) and all(type(op) in _COMPARISONS for op in node.ops):
        left, rights = each(node.left), [each(item) for item in node.comparators]
        if values is None:
            return None
        for op, right in zip(node.ops, rights, strict=True):
            try:
                if not _COMPARISONS[type(op)](left, right):
                    return False
            except TypeError as err:
                raise ReferenceProblem(f"when: {condition!r}: cannot compare {left!r} with {right!r}") from err
            left = right
        return True
    raise ReferenceProblem(
        f"when: {condition!r}: {ast.unparse(node)!r} is not allowed; a condition compares references and literals "
        "(==, !=, <, <=, >, >=, in, not in) joined by and, or, not"
    )
