"""The command lines a user reads in README.md and docs/*.md, as the acceptance tests must run them.

A command line is a line of a code block (fenced, or indented by four spaces) that starts with one
of the project's commands, with ``\\`` continuations joined and a trailing ``# comment`` removed,
or an inline ``python ...`` / ``make ...`` code span of README.md (its tables and prose).
"""

from __future__ import annotations

import re
from pathlib import Path

COMMAND_WORDS = ("python", "make", "torchrun", "wandb", "tar", "asgcn-")
INLINE_WORDS = ("python ", "make ")
_COMMENT = re.compile(r"\s+#(?:\s|$)")
_INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def documents(root: Path) -> list[Path]:
    """README.md and every docs/*.md, the files whose commands users copy."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _is_command(text: str) -> bool:
    return text.startswith(COMMAND_WORDS)


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` (a ``#`` after a space) and the spaces before it."""
    return _COMMENT.split(line, maxsplit=1)[0].rstrip()


def _code_lines(text: str) -> list[str]:
    """Lines of fenced blocks and of indented blocks (four spaces after a blank line), indentation removed."""
    lines, inside_fence, indented = [], False, False
    previous_blank = True
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            inside_fence = not inside_fence
            continue
        if inside_fence:
            lines.append(raw.strip())
        else:
            indented = raw.startswith("    ") and (indented or previous_blank) and bool(raw.strip())
            if indented:
                lines.append(raw.strip())
            previous_blank = not raw.strip()
    return lines


def block_commands(text: str) -> list[str]:
    """Commands of the code blocks, ``\\`` continuations joined into one line."""
    commands, pending = [], None
    for line in _code_lines(text):
        if pending is not None:
            pending += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                commands.append(_strip_comment(pending))
                pending = None
            continue
        if not _is_command(line):
            continue
        line = _strip_comment(line)
        if line.endswith("\\"):
            pending = line.rstrip("\\").strip()
        else:
            commands.append(line)
    return [" ".join(command.split()) for command in commands]


def inline_commands(text: str) -> list[str]:
    """``python ...`` and ``make ...`` code spans outside code blocks."""
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    return [span.strip() for span in _INLINE_CODE.findall(outside) if span.strip().startswith(INLINE_WORDS)]


def documented_commands(root: Path) -> dict[str, str]:
    """Every documented command line → the document it appears in first (relative to ``root``)."""
    found: dict[str, str] = {}
    for document in documents(root):
        text = document.read_text()
        commands = block_commands(text)
        if document.name == "README.md":
            commands += inline_commands(text)
        for command in commands:
            found.setdefault(command, str(document.relative_to(root)))
    return found
