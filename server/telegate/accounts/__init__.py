"""Accounts: what the server keeps of each Telegram account, and how it keeps it secret.

``_account`` checks the account document and the write-back; ``_vault`` seals accounts
under per-account data keys wrapped by the master key (encryption at rest).
"""
from __future__ import annotations

from ._account import (
    ACCOUNT_FIELDS, MAX_ENTITIES_PER_WRITE, MAX_ENTITIES_STORED, AccountError, StateTooLarge, check_account,
    check_state, merge_state, profile_of, proxy_host,
)
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
]
