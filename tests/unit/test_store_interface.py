"""The store's interface is its contract: the rest of the server uses ``PoolStore`` alone.

Read from the source (no server needed): nothing outside ``telegate/store/`` imports one of
the store's private modules or reaches for a store's ``.engine``; every method the app,
``serve``, the CLI and the waiting room call on a store is declared on ``PoolStore``, and
``Store`` has each of them.
"""
from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT

from telegate.store import PoolStore, Store, open_store

SERVER = ROOT / "server" / "telegate"
OUTSIDE = sorted(path for path in SERVER.rglob("*.py") if "store" not in path.relative_to(SERVER).parts[:1])


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_nothing_outside_the_store_imports_its_private_modules():
    private = {path.relative_to(SERVER).as_posix(): [name for name in _imports(ast.parse(path.read_text(encoding="utf-8")))
                                                     if "store._" in name or name.startswith("._")
                                                     and "store" in name]
               for path in OUTSIDE}
    assert {path: names for path, names in private.items() if names} == {}


def test_nothing_outside_the_store_touches_a_store_engine():
    reaching = [f"{path.relative_to(SERVER).as_posix()}:{node.lineno}"
                for path in OUTSIDE for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.Attribute) and node.attr == "engine"]
    assert reaching == []


def _store_calls(path: Path) -> set[str]:
    """Attributes read on anything named ``store`` (``store.x``, ``self.store.x``, ``source.x``...)."""
    names = {"store", "source", "target"}
    calls = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Attribute) and owner.attr == "store" or \
                    isinstance(owner, ast.Name) and owner.id in names:
                calls.add(node.attr)
    return calls


def test_what_the_server_calls_on_a_store_is_declared_on_pool_store(tmp_path):
    used = set()
    for name in ("app.py", "serve.py", "cli.py", "_waiting.py", "_admin_client.py", "metrics.py"):
        used |= _store_calls(SERVER / name)
    not_store = {"exists", "is_dir", "name", "with_name", "getrlimit", "setrlimit"}  # Paths, resource
    declared = {name for name in dir(PoolStore) if not name.startswith("_")} | set(PoolStore.__annotations__)
    assert used - not_store - declared == set()
    with open_store(tmp_path / "pool.db") as store:
        assert isinstance(store, Store) and {name for name in declared if not hasattr(store, name)} == set()
