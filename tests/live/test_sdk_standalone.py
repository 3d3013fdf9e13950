"""client.py works when copied alone into another project: only the stdlib, urllib3 and tenacity."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# One store is enough: client.py copied alone; the SDK suites run on both stores.
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PY = ROOT / "sdk" / "telegram_session_manager" / "client.py"

SCRIPT = r'''
import os, sys
# Even where the package is installed, the copied file must not need it (nor Telegram libraries).
for name in ("telegram_session_manager", "telethon", "pyrogram"):
    sys.modules[name] = None
from client import TelegramSessionManagerClient, NoSessionAvailable, LeaseLost, TeleGateError

url, key = os.environ["TELEGATE_URL"], os.environ["TELEGATE_API_KEY"]
client = TelegramSessionManagerClient(url, key, auto_wait=False)
session = client.get_session()
print("got", session["session_name"])
try:
    client.get_session()
except NoSessionAvailable as e:
    print("busy", e.in_use, e.waiting_count, e.next_release_in)
client.release_session(session["session_id"])

class FloodWaitError(Exception):  # what Telethon raises, as far as duck typing can tell
    seconds = 30

try:
    with client.session() as s:
        raise FloodWaitError()
except FloodWaitError:
    pass
print("status", client.get_status()["in_floodwait"])
client.close()
print("module", sys.modules["client"].__file__)
'''


def test_client_py_copied_alone_into_an_empty_folder_works(live_server, tmp_path):
    live_server.add_sessions("acc1")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(CLIENT_PY, project / "client.py")
    (project / "worker.py").write_text(SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("TELEGATE_")}
    env.update(TELEGATE_URL=live_server.url, TELEGATE_API_KEY=live_server.client_key)
    done = subprocess.run([sys.executable, "worker.py"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=60, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["got acc1", "busy 1 0 None", "status 1"]
    assert lines[3] == f"module {project / 'client.py'}"


def test_client_py_imports_only_the_stdlib_urllib3_and_tenacity():
    if not hasattr(sys, "stdlib_module_names"):
        pytest.skip("needs Python 3.10+ to list the standard library")
    tree = ast.parse(CLIENT_PY.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "client.py must not use relative imports"
            imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert third_party == {"urllib3", "tenacity"}
