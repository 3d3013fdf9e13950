"""Accounts: the formats they come in (:mod:`._formats`), and how the server keeps them.

See docs/ACCOUNTS.md. The Account JSON's fields are :data:`ACCOUNT_FIELDS`.
"""
from __future__ import annotations

from ._folder import Candidate, Found, Skipped, plan_folder, read_candidate
from ._formats import (ACCOUNT_FIELDS, FormatError, auth_key_bytes, new_account, pyrogram_string,
                       read_session_file, read_session_string, telethon_string, write_session_file)
from ._sidecar import apply_sidecar, proxy_url

__all__ = [
    "ACCOUNT_FIELDS", "FormatError", "new_account", "auth_key_bytes", "read_session_file", "read_session_string",
    "write_session_file", "telethon_string", "pyrogram_string", "apply_sidecar", "proxy_url",
    "Candidate", "Found", "Skipped", "plan_folder", "read_candidate",
]
