"""Encryption at rest: envelope encryption of each account under a master key (AES-GCM).

Every account gets its own random 256-bit data key. The account's secrets are sealed
with that data key; the data key is sealed ("wrapped") with the master key, and the
master key's id is stored beside it. The session id is bound into both as associated
data, so a sealed account copied onto another session's row does not open.

Rotation rewraps data keys, never the data: :meth:`Vault.rewrap` unwraps a data key with
whichever known master key made it (the current one or one of the previous ones) and
wraps it again with the current one.

The master key comes from ``TELEGATE_MASTER_KEY`` (base64 of 32 bytes) or from a key
file (``--master-key-file``, by default ``telegate.key`` beside the SQLite database),
created mode 0600 the first time an account needs it. ``TELEGATE_PREVIOUS_MASTER_KEYS``
(comma-separated) still unwrap during a rotation.

Nothing here ever puts a key or a secret in an exception message or a log line.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._files import PRIVATE_MODE, restrict

__all__ = [
    "Vault", "VaultError", "MasterKeyMissing", "WrongMasterKey", "CorruptAccount", "MasterKeySource",
    "new_master_key", "parse_master_key", "key_id_of", "master_key_source", "ENV_MASTER_KEY",
    "ENV_PREVIOUS_KEYS", "DEFAULT_KEY_FILE",
]

log = logging.getLogger(__name__)

ENV_MASTER_KEY = "TELEGATE_MASTER_KEY"
ENV_PREVIOUS_KEYS = "TELEGATE_PREVIOUS_MASTER_KEYS"
DEFAULT_KEY_FILE = "telegate.key"
#: A sealed value: format version, 12-byte nonce, ciphertext with its 16-byte tag; base64 text.
_VERSION = b"\x01"
_NONCE = 12


class VaultError(Exception):
    """Base of the vault's errors; messages name what to fix and never hold a key."""


class MasterKeyMissing(VaultError):
    """Accounts need a master key and none is configured (no variable, no key file)."""


class WrongMasterKey(VaultError):
    """An account was sealed under a master key this process does not have."""


class CorruptAccount(VaultError):
    """A sealed account does not open under the key that should open it: damaged or moved bytes."""


def new_master_key() -> str:
    """A new master key as ``telegate vault keygen`` prints it (base64 of 32 random bytes)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def parse_master_key(text: str, where: str) -> bytes:
    """The 32 bytes of a base64 master key; ``where`` names its source in the error (never the key)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VaultError(f"{where} is not base64; make a key with: telegate vault keygen") from None
    if len(raw) != 32:
        raise VaultError(f"{where} holds {len(raw)} bytes, a master key is 32 (base64 of 32 random bytes);"
                         " make one with: telegate vault keygen")
    return raw


def key_id_of(key: bytes) -> str:
    """A master key's public name: 16 hex digits of an HMAC under the key (it proves nothing about it)."""
    return hmac.new(key, b"telegate master key id", hashlib.sha256).hexdigest()[:16]


def _ad(kind: bytes, session_id: int) -> bytes:
    return b"telegate:" + kind + b":" + str(int(session_id)).encode("ascii")


def _seal(key: bytes | AESGCM, plain: bytes, ad: bytes) -> str:
    nonce = os.urandom(_NONCE)
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    return binascii.b2a_base64(_VERSION + nonce + cipher.encrypt(nonce, plain, ad), newline=False).decode("ascii")


def _open(key: bytes | AESGCM, sealed: str, ad: bytes) -> bytes:
    # Not base64's strict check: GCM's tag rejects any change to the bytes anyway.
    try:
        raw = binascii.a2b_base64(sealed)
    except (binascii.Error, ValueError, TypeError):
        raise CorruptAccount("not a sealed value") from None
    if len(raw) < 1 + _NONCE + 16 or raw[:1] != _VERSION:
        raise CorruptAccount("not a sealed value")
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    try:
        return cipher.decrypt(raw[1:1 + _NONCE], raw[1 + _NONCE:], ad)
    except InvalidTag:
        raise CorruptAccount("the sealed value does not open (damaged, or moved from another row)") from None


class Vault:
    """Seals and opens accounts under a current master key and any previous ones.

    ``current`` may be a callable that returns the key: it is called the first time a
    key is needed (a key file is then created only when the first account is stored).
    """

    def __init__(self, current: bytes | Callable[[], bytes] | None, previous: Iterable[bytes] = ()) -> None:
        self._current_source = current
        self._current: bytes | None = current if isinstance(current, bytes) else None
        self._keys: dict[str, bytes] = {key_id_of(key): key for key in previous}
        if self._current is not None:
            self._keys[key_id_of(self._current)] = self._current
        self._ciphers: dict[str, AESGCM] = {}  # one AESGCM per master key, made once

    @property
    def configured(self) -> bool:
        return self._current_source is not None

    def current(self) -> tuple[str, bytes]:
        """(id, key) of the current master key; :class:`MasterKeyMissing` when none is configured."""
        if self._current is None:
            if self._current_source is None:
                raise MasterKeyMissing(
                    f"no master key: set {ENV_MASTER_KEY} (make one with: telegate vault keygen) or"
                    " pass --master-key-file")
            assert callable(self._current_source)
            self._current = self._current_source()
            self._keys[key_id_of(self._current)] = self._current
        return key_id_of(self._current), self._current

    def current_id(self) -> str:
        return self.current()[0]

    def known_ids(self) -> set[str]:
        """Ids of every master key this vault can unwrap with (loading the current one)."""
        if self.configured:
            self.current()
        return set(self._keys)

    def _master(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is not None:
            return cipher
        if self.configured:
            self.current()
        key = self._keys.get(key_id)
        if key is None:
            raise WrongMasterKey(
                f"this account was sealed under master key {key_id}, which this server does not have"
                f" (its keys: {', '.join(sorted(self._keys)) or 'none'}); set {ENV_MASTER_KEY} to that key,"
                f" or name it in {ENV_PREVIOUS_KEYS} while you rotate")
        cipher = self._ciphers[key_id] = AESGCM(key)
        return cipher

    def new_data_key(self, session_id: int) -> tuple[bytes, str, str]:
        """A fresh data key for ``session_id``: (key, master key id, wrapped key)."""
        key_id, master = self.current()
        data_key = secrets.token_bytes(32)
        return data_key, key_id, _seal(master, data_key, _ad(b"dek", session_id))

    def unwrap(self, session_id: int, key_id: str, wrapped: str) -> bytes:
        try:
            return _open(self._master(key_id), wrapped, _ad(b"dek", session_id))
        except CorruptAccount:
            raise CorruptAccount(f"the data key of session {session_id} does not open under master key"
                                 f" {key_id}: the row is damaged or was copied from another session") from None

    def rewrap(self, session_id: int, key_id: str, wrapped: str) -> tuple[str, str]:
        """The data key wrapped again under the current master key: (new key id, new wrapped key)."""
        data_key = self.unwrap(session_id, key_id, wrapped)
        new_id, master = self.current()
        return new_id, _seal(master, data_key, _ad(b"dek", session_id))

    @staticmethod
    def seal(data_key: bytes, session_id: int, plain: bytes, *, kind: bytes = b"account") -> str:
        """``plain`` sealed under an account's data key, bound to its session and to ``kind`` (the part)."""
        return _seal(data_key, plain, _ad(kind, session_id))

    @staticmethod
    def unseal(data_key: bytes, session_id: int, sealed: str, *, kind: bytes = b"account") -> bytes:
        try:
            return _open(data_key, sealed, _ad(kind, session_id))
        except CorruptAccount:
            raise CorruptAccount(f"the account of session {session_id} does not open: the row is damaged"
                                 " or was copied from another session") from None


class MasterKeySource:
    """Where the master key comes from, resolved once: the variable, or a key file.

    ``load()`` returns the key, creating the key file (mode 0600, with a warning to back
    it up apart from the database) only when ``create`` is true and no file is there.
    ``available`` says, without creating anything, whether a key can be had.
    """

    def __init__(self, environ: Mapping[str, str], key_file: Path | None) -> None:
        self.env_key = environ.get(ENV_MASTER_KEY, "").strip() or None
        self.key_file = key_file
        self.previous = [parse_master_key(part, f"{ENV_PREVIOUS_KEYS} (item {number})")
                         for number, part in enumerate(environ.get(ENV_PREVIOUS_KEYS, "").split(","), 1)
                         if part.strip()]
        if self.env_key is not None:
            parse_master_key(self.env_key, ENV_MASTER_KEY)  # a malformed key fails at start, not later

    @property
    def available(self) -> bool:
        return self.env_key is not None or (self.key_file is not None and self.key_file.exists())

    def describe(self) -> str:
        return ENV_MASTER_KEY if self.env_key is not None else f"key file {self.key_file}"

    def load(self, *, create: bool = True) -> bytes:
        if self.env_key is not None:
            return parse_master_key(self.env_key, ENV_MASTER_KEY)
        if self.key_file is None:
            raise MasterKeyMissing(f"no master key: set {ENV_MASTER_KEY} or pass --master-key-file")
        path = self.key_file
        if not path.exists():
            if not create:
                raise MasterKeyMissing(
                    f"no master key: {path} does not exist and {ENV_MASTER_KEY} is not set; restore the key"
                    " file from your backup, or set the variable")
            _create_key_file(path)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeError) as exc:
            raise VaultError(f"cannot read the master key file {path}: {getattr(exc, 'strerror', None) or exc}"
                             ) from None
        return parse_master_key(text, f"the master key file {path}")

    def vault(self, *, create: bool = True) -> Vault:
        """A :class:`Vault` that loads the key on first need (so a key file appears only then)."""
        if not self.available and not create:
            return Vault(None, self.previous)
        return Vault(lambda: self.load(create=create), self.previous)


def _create_key_file(path: Path) -> None:
    """Write a new master key to ``path``, mode 0600 from the start, and warn to back it up."""
    key = new_master_key()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(os.fspath(path), flags, PRIVATE_MODE)
    except FileExistsError:
        return  # another process made it first: use that one
    except OSError as exc:
        raise VaultError(f"cannot create the master key file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    restrict(path)  # Windows: the mode is no ACL; leave the file to its owner
    log.warning("created the master key file %s: back it up now, somewhere apart from the database"
                " (without it the accounts in the database cannot be opened; with it and the database,"
                " anyone can open them)", path)


def master_key_source(environ: Mapping[str, str], key_file: Path | None, db: Path | str) -> MasterKeySource:
    """The source for a server or CLI at ``db``: ``key_file``, else ``telegate.key`` beside a SQLite
    database (in the working folder for a PostgreSQL URL)."""
    if key_file is None:
        key_file = (Path(db).parent / DEFAULT_KEY_FILE) if isinstance(db, Path) else Path(DEFAULT_KEY_FILE)
    return MasterKeySource(environ, key_file)
