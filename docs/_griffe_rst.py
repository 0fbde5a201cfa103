"""A griffe extension: the few reST constructs in jnn's docstrings, as Markdown.

jnn's docstrings read well in ``help()`` and use a little reST: cross-reference
roles (``:func:`jnn.fit```), inline and display math, and ``::`` before a
literal block. This extension rewrites them when mkdocstrings loads the package:

- ``:func:`x``` (and ``:class:``, ``:mod:``, ``:meth:``, ``:attr:``, ``:data:``,
  ``:exc:``, ``:obj:``) becomes an autorefs link to the documented object.
  ``x`` is looked up like Python would from the docstring's scope (the object,
  its class, its module, then ``jnn``). A name that does not resolve to a jnn
  object, and is not a known external one (jax, optax, numpy, ...), becomes a
  link to itself, which autorefs reports as unresolved: ``mkdocs build
  --strict`` fails on a broken reference.
- ``:math:`x``` becomes ``$x$`` and ``.. math:: x`` a ``$$`` block (arithmatex).
- An ``Example:`` section becomes ``Examples:``, so doctests render as code;
  a doctest outside such a section is fenced as a ``pycon`` block.
- ``a, b: text`` in ``Args:`` (parameters described together) becomes one
  entry per parameter, as griffe expects.
- A trailing ``::`` becomes ``:`` (the indented block after it is code already).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`(~?)([\w.]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_MATH_BLOCK = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_GROUPED = re.compile(r"^(\s+)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+):\s*(.*)$")
_EXTERNAL = ("jax", "jnp", "optax", "flax", "chex", "numpy", "np", "typing", "collections")


class RstToMarkdown(griffe.Extension):
    """Rewrite reST roles and math in every docstring of the loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj, pkg)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def convert(text: str, scope: griffe.Object, pkg: griffe.Module) -> str:
    """The Markdown form of one docstring."""
    # Google style's "Examples:" section renders doctests as code; "Example:"
    # (jnn's spelling, as in Google's style guide) would be a plain admonition.
    text = re.sub(r"^(\s*)Example:$", r"\1Examples:", text, flags=re.MULTILINE)
    text = _fence_loose_doctests(text)
    text = _expand_grouped_args(text)
    text = _math_blocks(text)
    text = _MATH.sub(lambda m: f"${m.group(1)}$", text)
    text = _ROLE.sub(lambda m: _link(m.group(2), m.group(1) == "~", scope, pkg), text)
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence_loose_doctests(text: str) -> str:
    """Fence doctests that stand outside an ``Examples:`` section (else Markdown reads them)."""
    lines, out, section = text.splitlines(), [], None  # section: indent of "Examples:"
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() and section is not None and _indent(line) <= section:
            section = None
        if line.strip() in ("Examples:", "Example:"):
            section = _indent(line)
        if section is None and line.lstrip().startswith(">>>"):
            pad = " " * _indent(line)
            out.append(f"{pad}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{pad}```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _expand_grouped_args(text: str) -> str:
    """``a, b: text`` in an ``Args:`` section becomes ``a: text`` and ``b: text``."""
    lines, out, section = text.splitlines(), [], None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() and section is not None and _indent(line) <= section:
            section = None
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            section = _indent(line)
        m = _GROUPED.match(line) if section is not None else None
        if m is None:
            out.append(line)
            i += 1
            continue
        pad, names, rest = m.group(1), m.group(2), m.group(3)
        body, i = [], i + 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(pad)):
            body.append(lines[i])
            i += 1
        for name in (n.strip() for n in names.split(",")):
            out += [f"{pad}{name}: {rest}", *body]
    return "\n".join(out)


def _math_blocks(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _MATH_BLOCK.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = m.group(1), [m.group(2)] if m.group(2) else []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i].strip())
            i += 1
        out += ["", f"{indent}$$", *(f"{indent}{b}" for b in body if b), f"{indent}$$", ""]
    return "\n".join(out)


def _link(ref: str, short: bool, scope: griffe.Object, pkg: griffe.Module) -> str:
    text = f"`{ref.rsplit('.', 1)[-1] if short else ref}`"
    target = resolve(ref, scope, pkg)
    if target is not None:
        return f"[{text}][{target}]"
    if ref.split(".")[0] in _EXTERNAL:
        return text
    return f"[{text}][{ref}]"  # unresolved: autorefs reports it, strict mode fails


def resolve(ref: str, scope: griffe.Object, pkg: griffe.Module) -> str | None:
    """The canonical path of the jnn object ``ref`` names from ``scope``, or None."""
    scopes, obj = [], scope
    while obj is not None:
        scopes.append(obj.path)
        obj = obj.parent
    for candidate in [*(f"{s}.{ref}" for s in scopes), ref]:
        if candidate == pkg.name:
            return pkg.path
        if not candidate.startswith(pkg.name + "."):
            continue
        try:
            found = pkg[candidate[len(pkg.name) + 1 :]]
            return found.final_target.path if found.is_alias else found.path
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
    return None
