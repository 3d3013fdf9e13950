"""The client guide's full example (CLIENT_USAGE.md), runnable.

Only the server address and key are read from the command line or the environment
(TELEGATE_URL, TELEGATE_API_KEY) instead of being written into the code.

    TELEGATE_URL=http://127.0.0.1:8000 TELEGATE_API_KEY=... python examples/seed_example.py
"""
import argparse
import os
import sys

from telegram_session_manager import TelegramSessionManagerClient, NoSessionAvailable  # noqa: F401

# A console that cannot show a character (an emoji session name on a cp1251 Windows console, or
# output piped to a file there) gets an escape like \U0001f642 instead of a crash.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(errors="backslashreplace")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--url", default=os.environ.get("TELEGATE_URL", "http://127.0.0.1:8000"))
parser.add_argument("--key", default=os.environ.get("TELEGATE_API_KEY"), required="TELEGATE_API_KEY" not in os.environ)
args = parser.parse_args()

# --- the guide's example, unchanged except base_url / api_key ---
client = TelegramSessionManagerClient(base_url=args.url, api_key=args.key)

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
