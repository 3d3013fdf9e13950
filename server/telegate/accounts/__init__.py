"""Accounts: what the server keeps of each Telegram account, the formats they come in, and how it keeps them secret.

``_account`` checks the account document and the write-back; ``_vault`` seals accounts
under per-account data keys wrapped by the master key (encryption at rest); ``_formats``,
``_sidecar``, ``_tdata`` and ``_folder`` read every format users have into the Account
JSON and write ``.session`` files back. See docs/ACCOUNTS.md.
"""
from __future__ import annotations

from ._account import (
    ACCOUNT_FIELDS, MAX_ENTITIES_PER_WRITE, MAX_ENTITIES_STORED, AccountError, StateTooLarge, check_account,
    check_state, merge_state, profile_of, proxy_host,
)
from ._folder import Candidate, Found, Skipped, plan_folder, read_candidate
from ._formats import (FormatError, auth_key_bytes, new_account, pyrogram_string, read_session_file,
                       read_session_string, telethon_string, write_session_file)
from ._sidecar import apply_sidecar, proxy_url
from ._vault import (
    DEFAULT_KEY_FILE, ENV_MASTER_KEY, ENV_PREVIOUS_KEYS, CorruptAccount, MasterKeyMissing, MasterKeySource, Vault,
    VaultError, WrongMasterKey, key_id_of, master_key_source, new_master_key, parse_master_key,
)

__all__ = [
    "ACCOUNT_FIELDS", "MAX_ENTITIES_PER_WRITE", "MAX_ENTITIES_STORED", "AccountError", "StateTooLarge",
    "check_account", "check_state", "merge_state", "profile_of", "proxy_host",
    "DEFAULT_KEY_FILE", "ENV_MASTER_KEY", "ENV_PREVIOUS_KEYS", "CorruptAccount", "MasterKeyMissing",
    "MasterKeySource", "Vault", "VaultError", "WrongMasterKey", "key_id_of", "master_key_source",
    "new_master_key", "parse_master_key",
    "FormatError", "new_account", "auth_key_bytes", "read_session_file", "read_session_string",
    "write_session_file", "telethon_string", "pyrogram_string", "apply_sidecar", "proxy_url",
    "Candidate", "Found", "Skipped", "plan_folder", "read_candidate",
]
