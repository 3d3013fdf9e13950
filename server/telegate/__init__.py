"""TeleGate: lease Telegram accounts from a shared pool, one worker per account at a time."""
from __future__ import annotations

__version__ = "0.1.0"

from .app import create_app
from .settings import Settings, resolve
from .store import Store, open_store

__all__ = ["__version__", "create_app", "Settings", "resolve", "Store", "open_store"]
