"""Which values the Zero to JupyterHub chart reads, found in the chart's own sources.

Two readers consume a release's values: helm, through the templates, and the hub, through
z2jh's ``files/hub/jupyterhub_config.py`` (``get_config("a.b")`` on the whole values tree,
which the hub Secret carries as ``values.yaml``).  :func:`chart_reads` collects both as
dotted paths; a key a values file sets is read when one of these paths is a prefix of it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

KeyPath = tuple[str, ...]

# .Values.a.b, $.Values.a.b, .root.Values.a.b, and the imagePullSecrets helper's alias of
# .root.Values (never bare: its assignments are not reads)
_REF = re.compile(r"\.Values((?:\.[A-Za-z0-9_]+)*)|\$jupyterhub_values((?:\.[A-Za-z0-9_]+)+)")
_HASKEY_BEFORE = re.compile(r"hasKey\s+\(?\s*$")
_QUOTED = re.compile(r'\s+"([^"]*)"')
_DIG = re.compile(r'\s*\|\s*dig((?:\s+(?:"[^"]*"|\$\w+))+)')

WHOLE_TREE = {
    "templates/hub/secret.yaml": 1,  # merge dict .Values: values.yaml for the hub's get_config
    "templates/_helpers.tpl": 1,  # $jupyterhub_values := .root.Values (an alias, read below)
}
"""Templates that take ``.Values`` whole, and how often.  Anything else taking the whole
tree would make every key "read": :func:`template_reads` refuses it."""

SKIPPED_TEMPLATES = {"NOTES.txt"}
"""Printed after an install, never applied: it reads removed keys only to warn about them."""


def _template_refs(name: str, text: str) -> Iterator[KeyPath]:
    whole = 0
    for match in _REF.finditer(text):
        path: KeyPath = tuple((match.group(1) or match.group(2) or "").split(".")[1:])
        rest = text[match.end() :]
        if _HASKEY_BEFORE.search(text[: match.start()]) and (key := _QUOTED.match(rest)):
            path += (key.group(1),)  # hasKey .Values.hub "fsGid": hub.fsGid
        elif dig := _DIG.match(rest):
            args = dig.group(1).split()
            keys = [a.strip('"') for a in args[:-1]]  # the last one is the default
            for key in keys:
                if key.startswith("$"):
                    break  # dig $service_key ...: any key below, so the prefix so far
                path += (key,)
        if path:
            yield path
        else:
            whole += 1
    if whole != WHOLE_TREE.get(name, 0):
        raise ValueError(f"{name} takes .Values whole {whole} times: update WHOLE_TREE")


def template_reads(chart: Path) -> set[KeyPath]:
    """``.Values`` paths in ``templates/**`` (``_*.tpl`` helpers included, NOTES.txt not)."""
    found: set[KeyPath] = set()
    for path in sorted((chart / "templates").rglob("*")):
        if path.is_file() and path.name not in SKIPPED_TEMPLATES:
            name = str(path.relative_to(chart))
            found.update(_template_refs(name, path.read_text()))
    return found


def _camel_case(name: str) -> str:
    """jupyterhub_config.py's ``camelCaseify``: ``start_timeout`` -> ``startTimeout``."""
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


_READERS = {"get_config": 0, "get_secret_value": 0, "set_config_if_not_none": 2}
"""z2jh.py's functions that read a values key, and which argument is the key."""


def _key_arg(call: ast.Call) -> ast.expr | None:
    if isinstance(call.func, ast.Name) and call.func.id in _READERS:
        index = _READERS[call.func.id]
        return call.args[index] if len(call.args) > index else None
    return None


def _loop_keys(loop: ast.For) -> dict[str, list[str]]:
    """``for trait, cfg_key in (("uid", None), ("mem_limit", "memory.limit"), ...)``:
    the values of ``cfg_key`` after ``if cfg_key is None: cfg_key = camelCaseify(trait)``."""
    target, rows = loop.target, loop.iter
    if not (isinstance(target, ast.Tuple) and isinstance(rows, ast.Tuple)):
        return {}
    names = [t.id for t in target.elts if isinstance(t, ast.Name)]
    if names != ["trait", "cfg_key"]:
        return {}
    keys = []
    for row in rows.elts:
        trait, key = (ast.literal_eval(e) for e in row.elts)  # type: ignore[attr-defined]
        keys.append(key if key is not None else _camel_case(trait))
    return {"cfg_key": keys}


def _key_strings(node: ast.expr, loop: dict[str, list[str]]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):  # f"hub.services.{key}.apiToken": its fixed start
        head = node.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return [head.value.rstrip(".")]
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add)
        and isinstance(node.left, ast.Constant)
        and isinstance(node.right, ast.Name)
        and node.right.id in loop
    ):
        return [node.left.value + key for key in loop[node.right.id]]
    raise ValueError(f"line {node.lineno}: a values key this parser cannot read")


def python_reads(config_py: Path) -> set[KeyPath]:
    """The values keys z2jh's ``jupyterhub_config.py`` reads (every branch, not only the
    ones a given release takes)."""
    tree = ast.parse(config_py.read_text())
    found: set[KeyPath] = set()

    def visit(node: ast.AST, loop: dict[str, list[str]]) -> None:
        if isinstance(node, ast.For):
            loop = {**loop, **_loop_keys(node)}
        if isinstance(node, ast.Call) and (arg := _key_arg(node)) is not None:
            found.update(tuple(k.split(".")) for k in _key_strings(arg, loop))
        for child in ast.iter_child_nodes(node):
            visit(child, loop)

    visit(tree, {})
    return found


def chart_reads(chart: Path) -> set[KeyPath]:
    """Every values path the chart reads: its templates and its hub configuration."""
    return template_reads(chart) | python_reads(chart / "files" / "hub" / "jupyterhub_config.py")


def leaf_paths(values: Any, prefix: KeyPath = ()) -> Iterator[KeyPath]:
    """Every key a values document sets, down to its leaves (a list or ``null`` is a leaf)."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from leaf_paths(value, (*prefix, str(key)))
    elif prefix:
        yield prefix


def unread(values: dict[str, Any], reads: set[KeyPath]) -> list[str]:
    """The keys ``values`` sets that no read path covers, dotted."""
    return sorted(
        ".".join(leaf)
        for leaf in leaf_paths(values)
        if not any(leaf[: len(read)] == read for read in reads)
    )
