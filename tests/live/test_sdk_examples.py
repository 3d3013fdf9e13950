"""Every example in examples/ runs against a live server (the Telethon one, which needs Telegram, is imported)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from telegram_session_manager import TelegramSessionManagerClient

# One store is enough: the example scripts' client side; the SDK suites run on both stores.
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_env(server=None, key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "sdk"), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    if server is not None:
        env["TELEGATE_URL"] = server.url
        env["TELEGATE_API_KEY"] = key or server.client_key
    return env


def run_example(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=120, cwd=ROOT)


def test_seed_example(live_server):
    live_server.add_sessions("acc1")
    done = run_example("seed_example.py", env=example_env(live_server))
    assert done.returncode == 0, done.stderr
    assert "✅ Получена сессия #1 с именем 'acc1'" in done.stdout
    assert "✅ Сессия #1 возвращена в пул" in done.stdout
    assert live_server.status()["free"] == 1


def test_seed_example_takes_flags_too(live_server):
    live_server.add_sessions("acc1")
    done = run_example("seed_example.py", "--url", live_server.url, "--key", live_server.client_key,
                       env=example_env())
    assert done.returncode == 0, done.stderr


def test_no_wait_example_gets_a_session_or_handles_none(live_server):
    [sid] = live_server.add_sessions("acc1")
    done = run_example("no_wait.py", env=example_env(live_server))
    assert done.returncode == 0, done.stderr
    assert "Получена сессия ID=1, имя=acc1" in done.stdout and "Сессия освобождена" in done.stdout
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as holder:
        holder.get_session()
        done = run_example("no_wait.py", "--attempts", "1", env=example_env(live_server))
    assert done.returncode == 2, done.stderr
    assert "Нет свободной сессии. В Flood Wait: 0. Ближайшая разблокировка через None сек." in done.stdout


def test_no_wait_example_gives_up_on_an_empty_pool(live_server):
    done = run_example("no_wait.py", env=example_env(live_server))
    assert done.returncode == 2 and "giving up" in done.stdout


def test_with_statement_example_reports_a_flood_wait(live_server):
    [sid] = live_server.add_sessions("acc1")
    done = run_example("with_statement.py", "--flood", "30", env=example_env(live_server))
    assert done.returncode == 0, done.stderr
    assert "Using session #1 'acc1'" in done.stdout
    assert "flood wait of 30 s" in done.stderr  # the SDK says what it did
    assert live_server.status()["in_floodwait"] == 1


def test_thread_pool_example(live_server):
    live_server.add_sessions("a", "b", "c")
    done = run_example("thread_pool.py", "--threads", "8", "--jobs", "24", "--work", "0.01", "--poll", "0.01",
                       env=example_env(live_server))
    assert done.returncode == 0, done.stderr
    assert "24 jobs done on 3 sessions" in done.stdout
    assert "waiting" in done.stderr  # 8 threads, 3 sessions: some waited, and said so
    assert live_server.status()["free"] == 3


def test_async_pool_example(live_server):
    live_server.add_sessions("a", "b", "c")
    done = run_example("async_pool.py", "--workers", "8", "--jobs", "24", "--work", "0.01", "--poll", "0.01",
                       env=example_env(live_server))
    assert done.returncode == 0, done.stderr
    assert "24 jobs done on 3 sessions" in done.stdout
    assert live_server.status()["free"] == 3


def test_status_monitor_example(live_server):
    live_server.add_sessions("a", "b")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as holder:
        holder.get_session(name="a")
        done = run_example("status_monitor.py", "--count", "1", "--sessions",
                           env=example_env(live_server, live_server.admin_key))
        assert done.returncode == 0, done.stderr
        assert "total 2  free 1  in use 1" in done.stdout
        assert "#1 a: held by" in done.stdout
        done = run_example("status_monitor.py", "--count", "1", "--sessions", env=example_env(live_server))
        assert done.returncode == 0 and "needs an admin key" in done.stderr


def test_examples_refuse_to_run_without_a_key():
    done = run_example("with_statement.py", env=example_env())
    assert done.returncode == 2 and "TELEGATE_API_KEY" in done.stderr


def test_telethon_worker_example_imports_and_shows_help():
    spec = importlib.util.spec_from_file_location("telethon_worker", EXAMPLES / "telethon_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main) and callable(module.one_job)
    done = run_example("telethon_worker.py", "--help", env=example_env())
    assert done.returncode == 0 and "--api-hash" in done.stdout


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_every_example_compiles(path):
    compile(path.read_text(encoding="utf-8"), str(path), "exec")


@pytest.mark.parametrize("example", ["telethon_ready.py", "telethon_ready_async.py",
                                     "pyrogram_ready.py", "pyrogram_ready_async.py"])
def test_ready_client_examples_build_a_client_per_job(live_server, tmp_path, example):
    """File mode (--sessions-dir), offline: each job leases a session of the example's kind, builds its client."""
    from support.sessions import pyrogram_file, telethon_file

    kind = "telethon" if example.startswith("telethon") else "pyrogram"
    other = "pyrogram" if kind == "telethon" else "telethon"
    folder = tmp_path / "sessions"
    folder.mkdir()
    live_server.add_sessions("t1", "t2", kind="telethon")
    live_server.add_sessions("p1", "p2", kind="pyrogram")
    for name in ("t1", "t2"):
        telethon_file(folder, name)
    for name in ("p1", "p2"):
        pyrogram_file(folder, name)
    done = run_example(example, "--sessions-dir", str(folder), "--offline", "--jobs", "2", "--api-id", "2040",
                       "--api-hash", "0" * 32, env=example_env(live_server))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("built a ") == 2 and "api_id 2040" in done.stdout
    status = live_server.status()
    assert status["in_use"] == 0 and status["free"] == 4
    names = {row["name"]: row["use_count"] for row in live_server.store.list_sessions()[0]}
    assert names[f"{kind[0]}1"] + names[f"{kind[0]}2"] == 2  # its own kind only
    assert names[f"{other[0]}1"] + names[f"{other[0]}2"] == 0
