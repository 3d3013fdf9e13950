"""Accounts at rest: the ``accounts`` table, and the SQL that stores, reads, merges and rewraps them.

Plain functions of a transaction (like ``_line.py``), in the store's shared dialect. Each
row holds one session's account sealed by the vault (``telegate.accounts._vault``): the
data key wrapped by the master key (``wrapped_key``, with ``master_key_id``) and the
account sealed by the data key (``sealed``), both as base64 text so that the two
databases, backups and ``migrate`` carry the same bytes. Beside them, in plain columns,
only what an operator may see: phone, username, premium, device, the proxy's host.
``sessions.has_account`` lets a claim ask for sessions holding an account through the
claim's own index scan. The tables are made by ``schema/<engine>/0008.sql``.
"""
from __future__ import annotations

import json
import time
import zlib
from typing import Any, Callable, Mapping, Sequence

from . import _catalogue as catalogue
from . import _history as history
from . import _leases as leases
from ..accounts import AccountError, Vault, check_account, merge_state, profile_of
from ..accounts._account import dumps
from ._base import DatabaseError, Engine, KeyInfo, Lease, NotFound, Tx, check_groups
from ._namekeys import key_of
from ._sql import padded

__all__ = ["AccountsPart", "RawJSON", "store_account", "sealed_row", "open_row",
           "prepare_write", "apply_write", "write_state", "rewrap_batch", "key_ids", "forget"]

_STATE_KIND = b"state"


def _seal_state(vault: Vault, data_key: bytes, session_id: int, state: Mapping[str, Any] | None) -> str | None:
    if not state:
        return None
    # Compressed before it is sealed: entity caches are repetitive JSON (about 4x smaller). The
    # state holds no secret of the account's own (those are in ``sealed``), so its length tells
    # nothing about them.
    return vault.seal(data_key, session_id, zlib.compress(dumps(state), 1), kind=_STATE_KIND)


def _profile_params(account: Mapping[str, Any]) -> dict[str, Any]:
    profile = profile_of(account)
    return {"phone": profile["phone"], "username": profile["username"],
            "premium": None if profile["premium"] is None else int(profile["premium"]),
            "device": profile["device"], "proxy_host": profile["proxy_host"]}


def store_account(tx: Tx, vault: Vault, session_id: int, account: Mapping[str, Any]) -> None:
    """Seal ``account`` (checked already) under a new data key and store it as ``session_id``'s."""
    data_key, key_id, wrapped = vault.new_data_key(session_id)
    rest = {name: value for name, value in account.items() if name != "state"}
    params = {"sid": session_id, "key_id": key_id, "wrapped": wrapped, "now": tx.now,
              "sealed": vault.seal(data_key, session_id, dumps(rest)),
              "state": _seal_state(vault, data_key, session_id, account.get("state")),
              **_profile_params(account)}
    tx.run("""
        INSERT INTO accounts (session_id, master_key_id, wrapped_key, sealed, state, phone, username, premium, device,
                              proxy_host, updated_at)
        VALUES (:sid, :key_id, :wrapped, :sealed, :state, :phone, :username, :premium, :device, :proxy_host, :now)
        ON CONFLICT (session_id) DO UPDATE SET
            master_key_id = excluded.master_key_id, wrapped_key = excluded.wrapped_key, sealed = excluded.sealed,
            state = excluded.state, revision = accounts.revision + 1,
            phone = excluded.phone, username = excluded.username, premium = excluded.premium,
            device = excluded.device, proxy_host = excluded.proxy_host, updated_at = excluded.updated_at""",
           params)
    # An account with a proxy of its own is proxy-bound: Telegram always sees the proxy's
    # address, so it moves between hosts at once; one without keeps the handover grace
    # (``_sql.Fit``, ``--handover-grace``). Set on every store and update, in this transaction.
    tx.run("UPDATE sessions SET has_account = 1, proxy_bound = :bound WHERE id = :sid",
           {"sid": session_id, "bound": 1 if account.get("proxy") else 0})


_ROW = "session_id, master_key_id, wrapped_key, sealed, state, revision"


def sealed_row(tx: Tx, session_id: int, *, lock: bool = False) -> Mapping[str, Any] | None:
    return tx.row(f"SELECT {_ROW} FROM accounts WHERE session_id = :sid" + (" /*for_update*/" if lock else ""),
                  {"sid": session_id})


class RawJSON(str):
    """JSON text to go into an answer as it is (see :func:`open_row`'s ``raw_state``)."""

    __slots__ = ()


def open_row(vault: Vault, row: Mapping[str, Any], *, raw_state: bool = False) -> tuple[dict[str, Any], bytes]:
    """(account, data key) of a sealed row; a vault error when the key is missing or the row damaged.

    ``raw_state``: the state as the JSON text it was sealed as (a :class:`RawJSON`; it was
    written by ``dumps``, so it is valid compact JSON), for an answer that passes it on: an
    entity cache of thousands is then neither parsed nor encoded again on every hand-out."""
    sid = row["session_id"]
    data_key = vault.unwrap(sid, row["master_key_id"], row["wrapped_key"])
    account = json.loads(vault.unseal(data_key, sid, row["sealed"]))
    state: Any = None
    if row["state"] is not None:
        text = zlib.decompress(vault.unseal(data_key, sid, row["state"], kind=_STATE_KIND))
        state = RawJSON(text.decode("utf-8")) if raw_state else json.loads(text)
    account["state"] = state
    return account, data_key


def prepare_write(vault: Vault, row: Mapping[str, Any], write: Mapping[str, Any]) -> dict[str, Any]:
    """The UPDATE parameters of a checked write-back merged into ``row``'s account (CPU only, no SQL),
    valid while the row keeps its ``revision``."""
    account, data_key = open_row(vault, row)
    merged = merge_state(account, write)
    sid = row["session_id"]
    sealed = row["sealed"]
    if write.get("dc") is not None:  # the auth part changed: reseal it (same data key)
        sealed = vault.seal(data_key, sid, dumps({k: v for k, v in merged.items() if k != "state"}))
    return {"sid": sid, "revision": row["revision"], "sealed": sealed,
            "state": _seal_state(vault, data_key, sid, merged["state"])}


def apply_write(tx: Tx, params: Mapping[str, Any]) -> bool:
    """Store a prepared write-back in ``tx`` if the row is still at the revision it was prepared from."""
    return tx.run("""UPDATE accounts SET sealed = :sealed, state = :state, revision = revision + 1, updated_at = :now
                     WHERE session_id = :sid AND revision = :revision""", {**params, "now": tx.now}) == 1


def write_state(tx: Tx, vault: Vault, session_id: int, write: Mapping[str, Any],
                prepared: Mapping[str, Any] | None = None) -> bool:
    """Merge a checked write-back into ``session_id``'s account in ``tx``; False when it holds none.

    ``prepared`` (from :func:`prepare_write`, done before the transaction, so that the
    decrypting, merging and sealing hold no lock) is stored if the row has not changed
    since; otherwise the merge is done again here. The data key stays (only the sealed
    parts change), so a rotation running beside it loses nothing.
    """
    if prepared is not None and apply_write(tx, prepared):
        return True
    row = sealed_row(tx, session_id, lock=True)
    if row is None:
        return False
    if not apply_write(tx, prepare_write(vault, row, write)):
        raise AssertionError("an account row changed under its lock")  # pragma: no cover
    return True


def rewrap_batch(tx: Tx, vault: Vault, limit: int) -> int:
    """Rewrap up to ``limit`` data keys not under the current master key; returns how many."""
    current = vault.current_id()
    rows = tx.rows("SELECT session_id, master_key_id, wrapped_key FROM accounts WHERE master_key_id <> :cur"
                   " ORDER BY session_id LIMIT :limit /*skip_locked*/", {"cur": current, "limit": limit})
    for row in rows:
        key_id, wrapped = vault.rewrap(row["session_id"], row["master_key_id"], row["wrapped_key"])
        tx.run("UPDATE accounts SET master_key_id = :key_id, wrapped_key = :wrapped"
               " WHERE session_id = :sid AND master_key_id = :old",
               {"key_id": key_id, "wrapped": wrapped, "sid": row["session_id"], "old": row["master_key_id"]})
    return len(rows)


def key_ids(tx: Tx) -> dict[str, int]:
    """How many accounts each master key id wraps."""
    return {row["master_key_id"]: row["n"] for row in tx.rows(
        "SELECT master_key_id, COUNT(*) AS n FROM accounts GROUP BY master_key_id")}


def forget(tx: Tx, session_ids: Sequence[int]) -> None:
    for sid in session_ids:
        tx.run("DELETE FROM accounts WHERE session_id = :sid", {"sid": sid})


class AccountsPart:
    """The store's accounts (a part of ``Store``, beside ``_pool``'s): stored, read, rotated.

    Written back by ``Store.release`` / ``renew`` through :func:`write_state`.
    """

    engine: Engine
    vault: Vault

    def put_sessions(self, items: Sequence[Mapping[str, Any]], *, update: bool = False) -> dict[str, list]:
        """Register sessions with their kind, meta and account, in one transaction.

        Each item: ``{"name", "kind"?, "meta"?, "groups"?, "account"?}``; an account is
        checked (:func:`telegate.accounts.check_account`) and sealed under a data key of its
        own. Names already registered are left as they are (``existing``), unless
        ``update``: then their kind, their meta (when given) and their account (when
        given) are replaced (``updated``), and their groups when given. New sessions go in
        their item's groups, as :meth:`add_sessions` puts them. Returns ``{"added": [{"id", "name"}],
        "updated": [...], "existing": [...]}`` in the caller's order; a name given twice
        counts once. Raises :class:`~telegate.accounts.AccountError` (nothing stored) for
        an invalid account, and a vault error when no master key can seal it.
        """
        wanted: dict[str, dict[str, Any]] = {}
        for number, item in enumerate(items):
            entry = {"name": item["name"], "kind": item.get("kind"),
                     "meta": item.get("meta"), "account": None}
            if item.get("groups") is not None:
                try:
                    entry["groups"] = check_groups(item["groups"], f"sessions[{number}].groups")
                except ValueError as exc:
                    raise AccountError(str(exc)) from None
            if item.get("account") is not None:
                entry["account"] = check_account(item["account"], f"sessions[{number}].account")
            wanted.setdefault(entry["name"], entry)
        if any(entry["account"] is not None for entry in wanted.values()):
            self.vault.current()  # no key, no transaction: fail before anything is written

        def put(tx: Tx) -> dict[str, list]:
            found = {row["name"]: row["id"] for row in self._rows_named(tx, list(wanted), "id, name")}
            added: list[dict[str, Any]] = []
            updated: list[dict[str, Any]] = []
            existing: list[str] = []
            for name, entry in wanted.items():
                meta = json.dumps(entry["meta"] or {}, ensure_ascii=False)
                sid = found.get(name)
                if sid is None:
                    # No conflict target: a name that differs only in case from one registered
                    # (its name_key taken) is skipped, and reported as existing, as add_sessions does.
                    inserted = tx.row("INSERT INTO sessions (name, name_key, kind, meta, created_at)"
                                      " VALUES (:name, :key, :kind, :meta, :now) ON CONFLICT DO NOTHING RETURNING id",
                                      {"name": name, "key": key_of(name), "kind": entry["kind"] or "unknown",
                                       "meta": meta, "now": tx.now})
                    if inserted is None:
                        existing.append(name)
                        continue
                    sid = inserted["id"]
                    added.append({"id": sid, "name": name})
                    if entry.get("groups"):  # as add_sessions puts new sessions in their groups
                        catalogue.insert_groups(tx, [sid], entry["groups"])
                elif update:
                    tx.run("UPDATE sessions SET kind = COALESCE(:kind, kind),"
                           " meta = CASE WHEN :keep = 1 THEN meta ELSE :meta END WHERE id = :id",
                           {"id": sid, "kind": entry["kind"], "meta": meta, "keep": int(entry["meta"] is None)})
                    if entry.get("groups") is not None:  # given: replaced, like the kind and meta
                        catalogue.set_groups(tx, sid, entry["groups"], None)
                    updated.append({"id": sid, "name": name})
                else:
                    existing.append(name)
                    continue
                if entry["account"] is not None:
                    store_account(tx, self.vault, sid, entry["account"])
                    history.record(tx, sid, "account_stored")
            return {"added": added, "updated": updated, "existing": existing}

        return self.engine.write(put)

    @staticmethod
    def _rows_named(tx: Tx, names: Sequence[str], columns: str) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = []
        for start in range(0, len(names), catalogue.NAMES_PER_QUERY):
            group = padded(list(names[start:start + catalogue.NAMES_PER_QUERY]))
            params = {f"n{number}": name for number, name in enumerate(group)}
            marks = ", ".join(f":n{number}" for number in range(len(group)))
            rows += tx.rows(f"SELECT {columns} FROM sessions WHERE name IN ({marks})", params)
        return rows

    def get_account(self, session_id: int, *, reader: KeyInfo | None = None) -> dict[str, Any] | None:
        """The account of ``session_id`` opened (every field, secrets included), or None when it holds none.

        Raises :class:`NotFound` for an unknown session, and a vault error when the master
        key that sealed it is missing or the row is damaged. ``reader`` (an admin reading
        it through the API) is recorded in the session's history.
        """
        account = self._open(session_id, reader)
        if account is not None and reader is not None:
            self.engine.write(lambda tx: history.record(tx, session_id, "account_read", key_name=reader.name))
        return account

    def _open(self, session_id: int, key: KeyInfo | None, raw_state: bool = False) -> dict[str, Any] | None:
        """The account of ``session_id`` opened, as ``key`` may see it: to a key confined to
        groups, a session outside them is not registered (:class:`NotFound`)."""
        def read(tx: Tx) -> Mapping[str, Any] | None:
            if tx.row("SELECT 1 AS x FROM sessions WHERE id = :id", {"id": session_id}) is None \
                    or not leases.visible(tx, session_id, key):
                raise NotFound(f"no session with id {session_id}")
            return sealed_row(tx, session_id)

        row = self.engine.read(read)
        return None if row is None else open_row(self.vault, row, raw_state=raw_state)[0]

    def lease_account(self, lease: Lease, key: KeyInfo | None = None, *,
                      raw_state: bool = False) -> dict[str, Any] | None:
        """The account of a lease taken with ``account=True``: opened from the row its claim read
        (the claim kept to ``key``'s groups), else (a lease granted to a waiting request) read
        now, as ``key`` may see it. None when it holds none. ``raw_state``: see :func:`open_row`."""
        if lease.sealed is not None:
            return open_row(self.vault, lease.sealed, raw_state=raw_state)[0]
        return self._open(lease.session_id, key, raw_state)

    def account_key_ids(self) -> dict[str, int]:
        """How many stored accounts each master key id wraps (none: no account stored)."""
        return self.engine.read(key_ids)

    def rotate_keys(self, *, batch: int = 200, progress: Callable[[int], None] | None = None) -> int:
        """Rewrap every data key to the vault's current master key, ``batch`` per transaction; returns how many.

        Online: each batch is a short transaction of its own, and a write-back beside it
        keeps the data key it found, so leases, hand-outs and write-backs go on meanwhile.
        ``progress`` is called with each batch's count.
        """
        current = self.vault.current_id()
        done = idle = 0
        while True:
            count = self.engine.write(lambda tx: rewrap_batch(tx, self.vault, batch))
            if count:
                done += count
                idle = 0
                if progress is not None:
                    progress(count)
                continue
            if not sum(n for key_id, n in self.account_key_ids().items() if key_id != current):
                return done
            # What is left is locked by write-backs right now (PostgreSQL skips those rows).
            idle += 1
            if idle > 200:
                raise DatabaseError("some accounts stayed locked for 10 s; run telegate vault rotate again")
            time.sleep(0.05)
