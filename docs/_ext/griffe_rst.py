"""A griffe extension for the API reference: our docstrings use Sphinx/RST markup (``:func:`x```,
``:math:`...```, ``.. math::`` blocks, double-backtick literals, ``Example:`` sections of doctests), while
mkdocstrings renders Markdown. Rewrite them into their Markdown equivalents before griffe parses them."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc|ref|py:\w+):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role(match: re.Match) -> str:
    """``:func:`~a.b.c``` -> ```c```; ``:func:`a.b.c``` -> ```a.b.c```."""
    target = match.group(1)
    return f"`{target.split('.')[-1]}`" if "~" in match.group(0) else f"`{target}`"


def _math_blocks(text: str) -> str:
    """``.. math::`` (inline on the directive line, or an indented block) -> ``$$ ... $$``."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
        if not match:
            out.append(line)
            i += 1
            continue
        indent, rest = match.groups()
        body = [rest] if rest.strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        content = " ".join(b for b in body if b)
        out.extend([f"{indent}$$", f"{indent}{content}", f"{indent}$$", ""])
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """Rewrite the RST constructs our docstrings use into Markdown (see the module docstring)."""
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"`\1`", text)
    return _EXAMPLE.sub(r"\1Examples:", text)


class RstToMarkdown(griffe.Extension):
    """Apply :func:`rst_to_markdown` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
