"""The client guides (English and Russian) show code that parses and names only what the SDK has."""
from __future__ import annotations

import ast
import re

import pytest

import telegram_session_manager as sdk
from support import ROOT

GUIDES = [ROOT / "docs" / "CLIENT_USAGE.md", ROOT / "docs" / "ru" / "CLIENT_USAGE.md"]
CLIENTS = (sdk.TelegramSessionManagerClient, sdk.AsyncTelegramSessionManagerClient)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_guide_code_matches_the_sdk(guide):
    text = guide.read_text(encoding="utf-8")
    blocks = code_blocks(text)
    assert len(blocks) >= 8
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "telegram_session_manager":
                for alias in node.names:
                    assert hasattr(sdk, alias.name), f"{guide.name}: telegram_session_manager has no {alias.name}"
    # Every client method and lease attribute the guide calls exists.
    for method in set(re.findall(r"\b(?:client|admin)\.(\w+)\(", text)):
        assert any(hasattr(cls, method) for cls in CLIENTS), f"{guide.name}: clients have no {method}()"
    for attribute in set(re.findall(r"\bs\.(\w+)", text)):
        assert hasattr(sdk.Lease, attribute) or attribute == "lost", f"{guide.name}: Lease has no {attribute}"
    for option in ("auto_wait", "ttl", "max_wait", "holder", "keepalive", "log_waits", "timeout", "retry_policy"):
        assert f"`{option}`" in text
        assert option in sdk.TelegramSessionManagerClient.__init__.__code__.co_varnames


def test_both_guides_have_the_same_sections():
    prose = [re.sub(r"```.*?```", "", g.read_text(encoding="utf-8"), flags=re.S) for g in GUIDES]
    english, russian = (re.findall(r"^#{1,3} ", text, re.M) for text in prose)
    assert english == russian
    blocks = [len(code_blocks(g.read_text(encoding="utf-8"))) for g in GUIDES]
    assert blocks[0] == blocks[1]
