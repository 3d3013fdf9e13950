"""The client guide's (CLIENT_USAGE.md, seed) examples, pasted into files, run unchanged against a live server.

The snippets below are the guide's code blocks as written; the only edits are the ones a
reader makes: the server URL and the API key filled in.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from telegram_session_manager import TelegramSessionManagerClient

ROOT = Path(__file__).resolve().parents[2]

CREATE_CLIENT = '''\
from telegram_session_manager import TelegramSessionManagerClient

# Инициализация клиента
client = TelegramSessionManagerClient(
    base_url="http://localhost:8000",   # URL сервиса (без завершающего слеша)
    api_key="ВАШ_API-КЛЮЧ",            # ваш API-ключ для доступа
    auto_wait=True                     # автоматическое ожидание освобождения сессии (включено по умолчанию)
)
'''

GET_SESSION_NO_WAIT = '''\
# Попытка получить сессию (режим auto_wait=False для демонстрации обработки ошибки)
client = TelegramSessionManagerClient(base_url="http://localhost:8000", api_key="MYKEY", auto_wait=False)
try:
    session = client.get_session()
    print(f"Получена сессия ID={session['session_id']}, имя={session['session_name']}")
except NoSessionAvailable as e:
    print(f"Нет свободной сессии. В Flood Wait: {e.waiting_count}. Ближайшая разблокировка через {e.next_release_in} сек.")
    # Здесь можно реализовать логику ожидания или повторного запроса
'''

RELEASE_IN_FINALLY = '''\
session = client.get_session()
try:
    # ... работа с Telegram сессией ...
    pass
finally:
    client.release_session(session["session_id"])
    print("Сессия освобождена")
'''

STATUS = '''\
stats = client.get_status()
print(f"Всего сессий: {stats['total']}")
print(f"Свободно: {stats['free']}, Занято: {stats['in_use']}, В ожидании: {stats['in_floodwait']}")
if stats.get("next_available"):
    print(f"Ближайшая сессия освободится: {stats['next_available']}")
'''

FULL_EXAMPLE = '''\
from telegram_session_manager import TelegramSessionManagerClient, NoSessionAvailable

client = TelegramSessionManagerClient(base_url="http://localhost:8000", api_key="MY_API_KEY")

try:
    # Запрашиваем сессию из пула
    session = client.get_session()
    session_id = session["session_id"]
    session_name = session["session_name"]
    print(f"✅ Получена сессия #{session_id} с именем '{session_name}'")

    # Здесь можно инициализировать Telegram-клиент (например, Telethon) используя файл с именем session_name
    # и выполнить необходимые действия с аккаунтом.
    # ...

finally:
    # В любом случае (при успехе или исключении выше) освобождаем сессию
    client.release_session(session_id)
    print(f"✅ Сессия #{session_id} возвращена в пул")
'''

IMPORTS = "from telegram_session_manager import TelegramSessionManagerClient, NoSessionAvailable\n"


def fill_in(code: str, server) -> str:
    """What a reader does: put in the real URL and key."""
    code = code.replace("http://localhost:8000", server.url)
    for placeholder in ("ВАШ_API-КЛЮЧ", "MY_API_KEY", "MYKEY"):
        code = code.replace(placeholder, server.client_key)
    return code


def run(code: str, tmp_path: Path, name: str = "guide.py") -> subprocess.CompletedProcess:
    script = tmp_path / name
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "sdk"), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=60, cwd=tmp_path)


def test_all_guide_examples_in_one_file_in_guide_order(live_server, tmp_path):
    live_server.add_sessions("acc1", "acc2", "acc3")
    code = "\n".join([CREATE_CLIENT, GET_SESSION_NO_WAIT, RELEASE_IN_FINALLY, STATUS, FULL_EXAMPLE])
    done = run(fill_in(code, live_server), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Получена сессия ID=1, имя=acc1",
        "Сессия освобождена",
        "Всего сессий: 3",
        # the no-wait example keeps acc1 (the guide never releases it)
        "Свободно: 2, Занято: 1, В ожидании: 0",
        "✅ Получена сессия #3 с именем 'acc3'",  # least recently used first
        "✅ Сессия #3 возвращена в пул",
    ]


def test_the_no_wait_example_when_nothing_is_free(live_server, tmp_path):
    live_server.add_sessions("acc1", "acc2")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as other:
        busy = other.get_session()
        other.release_session(other.get_session().session_id, flood_wait=60)
        done = run(fill_in(IMPORTS + GET_SESSION_NO_WAIT, live_server), tmp_path)
        other.release_session(busy.session_id)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("Нет свободной сессии. В Flood Wait: 1. Ближайшая разблокировка через ")
    assert 55 < float(line.split("через ")[1].split(" сек")[0]) <= 60


def test_the_full_example_waits_for_a_flood_wait_to_end_and_says_so(live_server, tmp_path):
    """auto_wait=True (the default): the example waits, printing why and how long, then proceeds."""
    live_server.add_sessions("acc1")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as other:
        # 3 s: still running when the example's first try comes, however slowly a loaded
        # machine starts its Python (with 1 s it could be over first, and nothing to wait for).
        other.release_session(other.get_session().session_id, flood_wait=3)
    done = run(fill_in(FULL_EXAMPLE, live_server), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "✅ Получена сессия #1 с именем 'acc1'" in done.stdout
    assert "no free session: 1 in flood wait" in done.stderr
    assert re.search(r"waiting [123] s for the flood wait to end", done.stderr), done.stderr


def test_status_and_release_examples_on_their_own(live_server, tmp_path):
    live_server.add_sessions("acc1")
    code = fill_in(CREATE_CLIENT, live_server) + RELEASE_IN_FINALLY + STATUS
    done = run(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Сессия освобождена", "Всего сессий: 1",
                                        "Свободно: 1, Занято: 0, В ожидании: 0"]
