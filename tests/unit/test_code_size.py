"""Rooms a newcomer can hold in their head: no server module over 600 lines, no class over 400."""
from __future__ import annotations

import ast

from support import ROOT

SERVER = ROOT / "server" / "telegate"
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400


def test_no_server_module_is_over_600_lines():
    sizes = {path.relative_to(SERVER).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for path in SERVER.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_no_server_class_is_over_400_lines():
    big = {}
    for path in SERVER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    big[f"{path.relative_to(SERVER).as_posix()}:{node.name}"] = lines
    assert big == {}
