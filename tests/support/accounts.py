"""Helpers for the accounts tests: accounts made of random secrets, a WSGI caller with a vault.

Every secret comes from ``os.urandom``, so a test that searches bytes for one cannot
find it by accident anywhere but where the server put it.
"""
from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Any

from .wsgi import WsgiCaller
from telegate import Settings, create_app
from telegate.accounts import Vault


def new_account(**overrides: Any) -> dict[str, Any]:
    """An account as the import makes one, every secret fresh and random."""
    account = {
        "dc_id": 2, "server_address": "149.154.167.51", "port": 443,
        "auth_key": base64.b64encode(os.urandom(256)).decode("ascii"),
        "user_id": 100000 + secrets.randbelow(10**9), "is_bot": False, "test_mode": False,
        "api_id": 2040, "api_hash": os.urandom(16).hex(),
        "device_model": "Pixel 7", "system_version": "Android 14", "app_version": "10.5.0",
        "lang_code": "en", "system_lang_code": "en-US", "lang_pack": "android",
        "proxy": f"socks5://user{secrets.randbelow(1000)}:{secrets.token_hex(12)}@proxy.example:1080",
        "twofa": "twofa-" + secrets.token_hex(12), "phone": "+1555" + str(secrets.randbelow(10**7)).zfill(7),
        "username": "acc_" + secrets.token_hex(4), "premium": False,
        "state": {"entities": [{"id": 777, "hash": 123456789, "type": "user", "username": "friend",
                                "phone": None, "name": "Friend"}],
                  "update_state": {"pts": 10, "qts": 0, "date": 1700000000, "seq": 3}},
    }
    account.update(overrides)
    return account


def secrets_of(account: dict[str, Any]) -> dict[str, bytes]:
    """Every secret of ``account`` in the forms a leak could take (raw, hex, base64, text)."""
    raw_key = base64.b64decode(account["auth_key"])
    password = account["proxy"].split(":")[2].split("@")[0]
    return {
        "auth_key raw": raw_key, "auth_key hex": raw_key.hex().encode(), "auth_key HEX": raw_key.hex().upper().encode(),
        "auth_key base64": account["auth_key"].encode(),
        "auth_key urlsafe base64": base64.urlsafe_b64encode(raw_key),
        "auth_key slice": raw_key[64:96],
        "api_hash": account["api_hash"].encode(), "proxy password": password.encode(),
        "twofa": account["twofa"].encode(),
    }


class VaultWsgi(WsgiCaller):
    """The in-process caller with a master key, settings of the test's choosing and a URL scheme."""

    def __init__(self, tmp_path: Path, db: Any, *, master: bytes | None = None, scheme: str = "http",
                 **settings: Any) -> None:
        super().__init__(tmp_path, db, **settings)
        self.master = master or os.urandom(32)
        self.store.vault = Vault(self.master)
        self.scheme = scheme
        self.accounts_key = self.store.create_key("worker", "client", accounts=True)

    def reconfigure(self, *, scheme: str = "http", **settings: Any) -> None:
        """The same store under an app with other settings (the listen address, the trusted proxy)."""
        self.settings = Settings(db=self.settings.db, **settings)
        self.app = create_app(self.settings, self.store)
        self.scheme = scheme

    def __call__(self, method: str, path: str, body: Any = None, **kwargs: Any):  # type: ignore[override]
        """A request as waitress would hand it over: with the scheme the trusted proxy said (``scheme``)."""
        original = self.app

        def with_scheme(environ: dict, start_response: Any) -> Any:
            environ["wsgi.url_scheme"] = self.scheme
            return original(environ, start_response)

        self.app = with_scheme
        try:
            return super().__call__(method, path, body, **kwargs)
        finally:
            self.app = original
