"""Benchmark: what ready clients cost, and what the host preference costs.

    python bench/ready_clients.py [--quick] [--seconds S] [--rounds R] [--entities 1000]

Three measurements, each side by side in alternating rounds, every round printed:

1. **Building a ready client** from an Account JSON with ``--entities`` cached entities
   (in process, no server): ``ready.build_telethon`` / ``ready.build_pyrogram`` plus
   reading back what changed at the end (``ready.changed_state``, what the block's exit does), in CPU
   milliseconds per lease; beside it the same library client built bare (an empty
   in-memory session), so the entity cache's share shows.
2. **A ready-client cycle** ``with client.telethon(connect=False)`` / ``client.pyrogram``
   (lease, build the client, disconnect, release) against a bare ``with client.session()``
   cycle on the same server, at 1 and 16 workers. The goal is at most 1.3x the bare
   cycle's time (ratio = bare rate / ready rate). Both modes: **file mode**
   (``sessions_dir=``: a lease of its kind, the .session file opened) on a pool of names,
   and **account mode** (the vault hands out the account with ``--entities`` cached
   entities; the client is built in memory from it) on a pool of accounts; beside the
   rates, the server's CPU per cycle. Then the floor, in CPU milliseconds: what a ready
   cycle cannot do without, each part alone (``TelegramClient`` construction on a memory
   session and on a .session file, decoding a hand-out's JSON), against each cycle's
   client CPU.
3. **Host preference**: the same bare cycle with every acquire sending ``host`` against
   none sent (goal: at least 0.95x the throughput; and the server's CPU per cycle, which the
   machine's load hardly moves), on a server of its own (no other kind
   of cycle leaves accounts in another host's grace). Two hosts sharing one pool (then
   the handover grace keeps each account on its host for 15 s) are measured apart, from 2
   workers up: a single worker is on one host.
"""
from __future__ import annotations

import base64
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def account(entities: int) -> dict[str, Any]:
    return {
        "dc_id": 2, "server_address": "149.154.167.51", "port": 443,
        "auth_key": base64.b64encode(os.urandom(256)).decode("ascii"), "user_id": 12345, "is_bot": False,
        "test_mode": False, "api_id": 2040, "api_hash": os.urandom(16).hex(),
        "device_model": "Bench", "system_version": "1", "app_version": "1", "lang_code": "en",
        "system_lang_code": "en-US", "lang_pack": "tdesktop", "proxy": "socks5://u:p@10.0.0.1:1080",
        "state": {"entities": [{"id": 1000 + n, "hash": secrets.randbits(63), "type": "user",
                                "username": f"user{n}", "phone": None, "name": f"User {n}"}
                               for n in range(entities)],
                  "update_state": {"pts": 1, "qts": 0, "date": 1700000000, "seq": 1}},
    }


def build_times(entities: int, rounds: int, per_round: int) -> list[list[Any]]:
    from telethon import TelegramClient
    from telethon.sessions import MemorySession

    from telegram_session_manager import ready

    acc = account(entities)
    # What the end of a block does (``changed_state``; an older tree read every entity back).
    changed = getattr(ready, "changed_state", None)

    def telethon_ready() -> None:
        tg = ready.build_telethon(acc)
        if changed is not None:
            changed("telethon", tg, acc)
        else:
            ready.state_changes(acc, ready.telethon_state(tg))

    def telethon_bare() -> None:
        TelegramClient(MemorySession(), 2040, acc["api_hash"])

    def pyrogram_ready() -> None:
        app = ready.build_pyrogram(acc)
        if changed is not None:
            changed("pyrogram", app, acc)
        else:
            ready.state_changes(acc, ready.pyrogram_state(app))
        app.storage.dispose()
        app.executor.shutdown(wait=False)

    def pyrogram_bare() -> None:
        import pyrogram
        app = pyrogram.Client("bare", api_id=2040, api_hash=acc["api_hash"], in_memory=True)
        app.executor.shutdown(wait=False)

    kinds = {"telethon ready": telethon_ready, "telethon bare": telethon_bare,
             "kurigram ready": pyrogram_ready, "kurigram bare": pyrogram_bare}
    got: dict[str, list[float]] = {name: [] for name in kinds}
    for run in kinds.values():
        run()  # warm-up: the first call imports the library (seconds for kurigram)
    for number in range(rounds):
        names = list(kinds)
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            # CPU time of this process: the build is pure Python on one thread, and CPU time
            # hardly moves when other work shares the machine (wall time does, a lot).
            began = time.process_time()
            for _ in range(per_round):
                kinds[name]()
            got[name].append((time.process_time() - began) / per_round)
    rows = []
    for library in ("telethon", "kurigram"):
        readies, bares = got[f"{library} ready"], got[f"{library} bare"]
        rows.append([library, entities, c.ms(c.median(readies)), c.ms(c.median(bares)),
                     ", ".join(f"{c.ms(r):.2f}" for r in readies)])
    return rows


def telethon_file(folder: Path, name: str) -> None:
    """A Telethon .session file with a random key and a few entities."""
    from telethon.crypto import AuthKey
    from telethon.sessions import SQLiteSession
    from telethon.tl.types import User

    session = SQLiteSession(str(folder / name))
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(os.urandom(256))
    users = [User(id=1000 + n, access_hash=secrets.randbits(63), username=f"user{n}") for n in range(100)]
    session.process_entities(type("Result", (), {"users": users, "chats": []})())
    session.save()
    session.close()


def kurigram_file(folder: Path, name: str) -> None:
    """A kurigram .session file with a random key (kurigram's own storage writes it)."""
    import asyncio

    from pyrogram.storage import SQLiteStorage

    async def make() -> None:
        storage = SQLiteStorage(name, workdir=folder)
        await storage.open()
        await storage.dc_id(2)
        await storage.api_id(2040)
        await storage.test_mode(False)
        await storage.auth_key(os.urandom(256))
        await storage.user_id(12345)
        await storage.is_bot(False)
        await storage.date(0)
        await storage.save()
        await storage.close()

    asyncio.run(make())


class Ready:
    """``with client.telethon(connect=False)`` (or ``client.pyrogram``) per cycle; file mode when
    ``folder`` is set (the .session files are there), account mode otherwise."""

    library = "telethon"
    folder: Path | None = None
    host: str | None = None

    def __init__(self, server: c.Server) -> None:
        from telegram_session_manager import TelegramSessionManagerClient
        self.client = TelegramSessionManagerClient(server.url, server.api_key, auto_wait=False, ttl=60,
                                                   host=self.host)
        self.options: dict[str, Any] = {} if self.folder is None else {
            "sessions_dir": self.folder, "api_id": 2040, "api_hash": "0" * 32}

    def cycle(self) -> bool:
        from telegram_session_manager import NoSessionAvailable
        block = self.client.telethon if self.library == "telethon" else self.client.pyrogram
        try:
            with block(connect=False, **self.options):
                pass
        except NoSessionAvailable:
            return False
        return True

    def close(self) -> None:
        self.client.close()


class Bare(c.SdkClient):
    """``with client.session()`` per cycle, sending ``host`` (or none: "")."""


def client_kind(name: str, base: type, **attributes: Any) -> str:
    c.CLIENTS[name] = type(name, (base,), attributes)
    return name


class TwoHosts(Bare):
    """Workers alternate between two host names (two machines sharing one pool)."""

    count = 0

    def __init__(self, server: c.Server) -> None:
        TwoHosts.count += 1
        self.host = f"bench-host-{TwoHosts.count % 2}"
        super().__init__(server)


def alternate(kinds: list[str], server: c.Server, clients: int, seconds: float, rounds: int) -> dict[str, list]:
    """Each kind in turn, the order rotating every round; each result also carries the CPU per
    cycle of this process (the workers: the client side), beside the server's."""
    got: dict[str, list[c.Result]] = {kind: [] for kind in kinds}
    for number in range(rounds):
        shift = number % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            began = time.process_time()
            result = c.run_load(server, clients, seconds, kind)
            result.client_cpu = (time.process_time() - began) / result.all_cycles if result.all_cycles else float("nan")
            got[kind].append(result)
    return got


def cpu_per_cycle(result: c.Result) -> float:
    """Client and server CPU seconds per cycle: what a cycle costs the machine, which its load
    hardly moves (the rates it moves a lot)."""
    return getattr(result, "client_cpu", float("nan")) + result.cpu_per_cycle


def ratio_row(label: str, clients: int, got: dict[str, list], kind: str, baseline: str, time_ratio: bool) -> list:
    """Rates and their ratio every round; then the CPU (client + server) per cycle of each and
    its ratio, the same comparison in a figure the machine's load hardly moves."""
    pairs = [(a, b) for a, b in zip(got[kind], got[baseline]) if a.rate and b.rate]
    ratios = [b.rate / a.rate if time_ratio else a.rate / b.rate for a, b in pairs]
    cpu = [cpu_per_cycle(a) / cpu_per_cycle(b) if time_ratio else cpu_per_cycle(b) / cpu_per_cycle(a)
           for a, b in zip(got[kind], got[baseline])]
    return [label, clients, c.median([r.rate for r in got[kind]]), c.median([r.rate for r in got[baseline]]),
            c.median(ratios), ", ".join(f"{r:.2f}" for r in ratios),
            f"{c.ms(c.median([getattr(r, 'client_cpu', float('nan')) for r in got[kind]])):.2f}"
            f" + {c.ms(c.median([r.cpu_per_cycle for r in got[kind]])):.2f}",
            f"{c.ms(c.median([getattr(r, 'client_cpu', float('nan')) for r in got[baseline]])):.2f}"
            f" + {c.ms(c.median([r.cpu_per_cycle for r in got[baseline]])):.2f}",
            c.median(cpu), ", ".join(f"{r:.2f}" for r in cpu)]


def accounts_server(running: c.Servers, where: Path, entities: int, access_log: str) -> c.Server:
    """A server whose 64 sessions each hold an account with ``entities`` cached entities (its
    master key file beside the database, where the server finds it)."""
    from telegate.accounts import master_key_source
    from telegate.store import open_store

    db = where / "accounts.db"
    with open_store(db, vault=master_key_source({}, None, db).vault()) as store:
        store.put_sessions([{"name": f"a{n:03d}", "kind": "telethon", "account": account(entities)}
                            for n in range(64)])
        key = store.create_key("bench", "client", accounts=True)
    return running.start("telegate", db=db, api_key=key, label="accounts", extra=("--access-log", access_log))


def floor_rows(folder: Path, entities: int, rounds: int, per_round: int) -> list[list[Any]]:
    """CPU ms of what a ready cycle cannot do without, each alone: ``TelegramClient`` built on
    a memory session; built on a .session file (Telethon opens it: file mode's build); and
    decoding a hand-out's JSON answer with ``entities`` cached entities (account mode)."""
    import json

    from telethon import TelegramClient
    from telethon.sessions import MemorySession

    path = str(folder / "t000.session")
    answer = json.dumps({"session_id": 1, "account": account(entities)})

    def opened() -> None:
        TelegramClient(path, 2040, "0" * 32).session.close()

    parts = {"TelegramClient(MemorySession()) alone": lambda: TelegramClient(MemorySession(), 2040, "0" * 32),
             "TelegramClient(<the .session file>) alone, file closed after": opened,
             f"json.loads of a hand-out with {entities} entities": lambda: json.loads(answer)}
    rows = []
    for label, part in parts.items():
        part()
        times = []
        for _ in range(rounds):
            began = time.process_time()
            for _ in range(per_round):
                part()
            times.append((time.process_time() - began) / per_round)
        rows.append([label, c.ms(c.median(times)), ", ".join(f"{c.ms(t):.3f}" for t in times)])
    return rows


def client_cpu_rows(server: c.Server, kinds: dict[str, str], cycles: int, rounds: int) -> list[list[Any]]:
    """Client CPU ms per cycle of each kind, one worker in this thread, alternating rounds."""
    made = {label: c.CLIENTS[kind](server) for label, kind in kinds.items()}
    got: dict[str, list[float]] = {label: [] for label in kinds}
    try:
        for one in made.values():
            for _ in range(5):
                one.cycle()
        for number in range(rounds):
            labels = list(kinds)
            shift = number % len(labels)
            for label in labels[shift:] + labels[:shift]:
                began = time.process_time()
                for _ in range(cycles):
                    made[label].cycle()
                got[label].append((time.process_time() - began) / cycles)
    finally:
        for one in made.values():
            one.close()
    return [[f"{label}: client CPU per cycle", c.ms(c.median(times)), ", ".join(f"{c.ms(t):.3f}" for t in times)]
            for label, times in got.items()]


def main(argv: list[str] | None = None) -> int:
    parser = c.arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--clients", default="1,16")
    args = parser.parse_args(argv)
    seconds = args.seconds or (0.3 if args.quick else 1.5)
    rounds = args.rounds or (1 if args.quick else 5)
    counts = [int(n) for n in args.clients.split(",")][: 1 if args.quick else None]
    print(f"# Benchmark: ready clients ({c.environment_note()})")
    print(f"# {rounds} alternating rounds, {seconds:g} s per kind and round; every round's ratio printed")

    print(f"\n## 1. Building a ready client with {args.entities} cached entities (CPU ms per lease, build +"
          " state read at the end)")
    print(c.table(["library", "entities", "ready ms", "bare client ms", "ready ms per round"],
                  build_times(args.entities, rounds, 3 if args.quick else 20)))

    from telegate.store import open_store

    with c.workspace(args.workdir) as where, c.Servers(where) as running:
        folder = where / "sessions"
        folder.mkdir(exist_ok=True)
        server = running.start("telegate", sessions=0, extra=("--access-log", args.access_log))
        telethon_names = [f"t{n:03d}" for n in range(64)]
        kurigram_names = [f"p{n:03d}" for n in range(64)]
        with open_store(server.db) as store:
            store.add_sessions(telethon_names, kind="telethon")
            store.add_sessions(kurigram_names, kind="pyrogram")
        for name in telethon_names:
            telethon_file(folder, name)
        for name in kurigram_names:
            kurigram_file(folder, name)
        file_telethon = client_kind("file-telethon", Ready, folder=folder)
        file_kurigram = client_kind("file-kurigram", Ready, folder=folder, library="pyrogram")
        account_telethon = client_kind("account-telethon", Ready)
        account_kurigram = client_kind("account-kurigram", Ready, library="pyrogram")
        bare_kind = client_kind("bare-session", Bare)
        accounts = accounts_server(running, where, args.entities, args.access_log)

        print("\n## 2. `with client.telethon(connect=False)` / `client.pyrogram` against a bare"
              " `with client.session()` on the same server")
        rows = []
        for clients in counts:
            got = alternate([file_telethon, file_kurigram, bare_kind], server, clients, seconds, rounds)
            rows.append(ratio_row("file mode, Telethon", clients, got, file_telethon, bare_kind, time_ratio=True))
            rows.append(ratio_row("file mode, kurigram", clients, got, file_kurigram, bare_kind, time_ratio=True))
            got = alternate([account_telethon, account_kurigram, bare_kind], accounts, clients, seconds, rounds)
            rows.append(ratio_row(f"account mode ({args.entities} entities), Telethon", clients, got,
                                  account_telethon, bare_kind, time_ratio=True))
            rows.append(ratio_row(f"account mode ({args.entities} entities), kurigram", clients, got,
                                  account_kurigram, bare_kind, time_ratio=True))
        print(c.table(["cycle", "workers", "ready cycles/s", "bare cycles/s", "time ratio (goal <= 1.3)",
                       "per round", "ready CPU ms/cycle (client + server)", "bare CPU ms/cycle", "CPU ratio (ready / bare)",
                       "CPU ratio per round"], rows))
        cycles = 20 if args.quick else 200
        print("\nThe floor, in CPU ms (one worker in the benchmark's own thread; the server's CPU is not in it):")
        rows = floor_rows(folder, args.entities, rounds, 20 if args.quick else 200)
        rows += client_cpu_rows(server, {"bare": bare_kind, "file mode, Telethon": file_telethon}, cycles, rounds)
        rows += client_cpu_rows(accounts, {"bare (accounts pool)": bare_kind, "account mode, Telethon": account_telethon,
                                           "account mode, kurigram": account_kurigram}, cycles, rounds)
        print(c.table(["what", "CPU ms", "per round"], rows))

        no_host = client_kind("bare-no-host", Bare, host="")
        one_host = client_kind("bare-one-host", Bare, host="bench-host")
        two_hosts = client_kind("bare-two-hosts", TwoHosts)
        print("\n## 3. Host preference: acquires sending host against none (throughput ratio, goal >= 0.95)")
        rows = []
        hosts = running.start("telegate", label="hosts", extra=("--access-log", args.access_log))
        shared = running.start("telegate", label="two-hosts", extra=("--access-log", args.access_log))
        for clients in counts:
            got = alternate([one_host, no_host], hosts, clients, seconds, rounds)
            rows.append(ratio_row("one host", clients, got, one_host, no_host, time_ratio=False))
            if clients > 1:
                got = alternate([two_hosts, no_host], shared, clients, seconds, rounds)
                rows.append(ratio_row("two hosts", clients, got, two_hosts, no_host, time_ratio=False))
        print(c.table(["with host", "workers", "cycles/s", "no host cycles/s", "ratio (goal >= 0.95)",
                       "per round", "CPU ms/cycle (client + server)", "no host CPU ms/cycle",
                       "CPU ratio (no host / host)", "CPU ratio per round"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
