"""The Python blocks of README.md and docs/*.md run as a reader would copy them, and give what
their comments say.

Each ```python block runs on its own, in a fresh interpreter (a subprocess with a timeout), in a
temporary directory with ``HETFLOW_HOME`` there too; it must exit with status 0. A top-level
expression (or a ``print`` of one) whose line ends in a comment that is a Python literal, such
as ``add(1, 2).result()   # 3`` or ``print(fut2.result())   # 13; ...``, must give that value
(the comment up to a ``;`` or ``:``; strings and ``...`` are not taken as expected values).

A block opts out with an HTML comment on the line just before its fence, which neither GitHub
nor the documentation site shows:

- ``<!-- docs-test: skip REASON -->``: not run (a fragment, or a block that needs ``mpirun``, a
  GPU or the files of an earlier run);
- ``<!-- docs-test: requires MODULE[, MODULE...] -->``: skipped where one of those modules
  (an optional extra) cannot be imported.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(skip|requires)\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```\s*python\s*$")

CHECK = '''\
def __docs_expect(value, expected, line):
    if value != expected:
        raise AssertionError(f"line {line} gives {value!r}; its comment says {expected!r}")
    return value
'''


def python_blocks():
    """(document, line of the fence, source, marker) of every ```python block."""
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            opening = FENCE.match(lines[index])
            if opening is None:
                index += 1
                continue
            indent = len(opening.group(1))
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            source = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
            marker = MARKER.match(lines[index - 1]) if index > 0 else None
            yield document.relative_to(ROOT).as_posix(), index + 1, source, marker
            index = end + 1


def expected_value(comment: str):
    """The literal a comment states, or None where it states none."""
    text = re.split(r"[;:]", comment, maxsplit=1)[0].strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, (str, bytes)) or "Ellipsis" in repr(value):
        return None
    return (value,)


def with_checks(source: str) -> str:
    """``source`` with each top-level expression whose comment states its value checked."""
    lines = source.splitlines()
    for statement in ast.parse(source).body:
        if not isinstance(statement, ast.Expr) or statement.lineno != statement.end_lineno:
            continue
        line = lines[statement.lineno - 1].encode()  # ast's columns count UTF-8 bytes
        comment = line[statement.end_col_offset :].decode().strip()
        if not comment.startswith("#"):
            continue
        expected = expected_value(comment[1:])
        if expected is None:
            continue
        node = statement.value
        checked = node
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            if len(node.args) != 1 or node.keywords:
                continue
            checked = node.args[0]
        inner = ast.get_source_segment(source, checked)
        call = f"__docs_expect({inner}, {expected[0]!r}, {statement.lineno})"
        indent = line[: node.col_offset].decode()
        lines[statement.lineno - 1] = indent + (call if checked is node else f"print({call})")
    return CHECK + "\n".join(lines) + "\n"


BLOCKS = list(python_blocks())


def test_the_documents_have_python_blocks():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(
    "document, line, source, marker", BLOCKS, ids=[f"{document}:{line}" for document, line, _, _ in BLOCKS]
)
def test_a_python_block_runs_as_written(document, line, source, marker, tmp_path):
    if marker is not None:
        kind, argument = marker.groups()
        if kind == "skip":
            pytest.skip(argument or "opted out")
        for module in re.split(r"[,\s]+", argument):
            if module and importlib.util.find_spec(module) is None:
                pytest.skip(f"needs {module}")
    script = tmp_path / "block.py"
    script.write_text(with_checks(source), encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "HETFLOW_HOME": str(home), "MPLBACKEND": "Agg"},
    )
    assert completed.returncode == 0, f"{document}:{line}\n{completed.stdout}\n{completed.stderr}"


def test_comments_that_state_a_value_are_checked():
    checked = with_checks("x = 1\nx + 1   # 2\nprint(x)   # 1; as said\nx   # the value\n'é' and x   # 1\n")
    assert "__docs_expect(x + 1, 2, 2)" in checked
    assert "print(__docs_expect(x, 1, 3))" in checked
    assert "x   # the value" in checked
    assert "__docs_expect('é' and x, 1, 5)" in checked
    exec(compile(checked, "<checked>", "exec"), {})
    with pytest.raises(AssertionError, match="line 1 gives 1; its comment says 2"):
        exec(compile(with_checks("1   # 2\n"), "<wrong>", "exec"), {})
