"""`pip install .` ships every package of the tree (setup.cfg lists them by hand)."""
from __future__ import annotations

import configparser
import fnmatch

from support import ROOT


def test_setup_cfg_lists_every_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    listed = set(config["options"]["packages"].split())
    roots = {"telegate": ROOT / "server" / "telegate",
             "telegram_session_manager": ROOT / "sdk" / "telegram_session_manager"}
    on_disk = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            on_disk.add(".".join((name, *relative)))
    assert on_disk - listed == set(), "add these to [options] packages in setup.cfg"


def test_setup_cfg_ships_every_data_file():
    """The schema's SQL files and the dashboard's static files go into the wheel too."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    patterns = {package.strip(): value.split() for package, value in config["options.package_data"].items()}
    server = ROOT / "server"
    unshipped = []
    for path in (server / "telegate").rglob("*"):
        if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(server)
        shipped = False
        for cut in range(1, len(relative.parts)):
            package = ".".join(relative.parts[:cut])
            rest = "/".join(relative.parts[cut:])
            if any(fnmatch.fnmatchcase(rest, pattern) for pattern in patterns.get(package, [])):
                shipped = True
        if not shipped:
            unshipped.append(str(relative))
    assert (server / "telegate" / "store" / "schema" / "sqlite" / "0001.sql").is_file()
    assert unshipped == [], "add these to [options.package_data] in setup.cfg"


# -- the client alone, and everything, each in a fresh venv --------------------------------------

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import venv  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def fresh_venv(where: Path) -> Path:
    """A new virtual environment with nothing in it, not even pip; its python.

    pip is the test run's own, pointed at it with ``--python`` (see :func:`pip`): installing
    pip into each venv first (ensurepip) took seconds and is not what these tests check.
    """
    venv.EnvBuilder(with_pip=False, clear=True).create(where)
    return where / ("Scripts" if sys.platform == "win32" else "bin") / "python"


def pip(python: Path, *args: str, cwd: Path = ROOT) -> str:
    """pip (this run's) acting on ``python``'s environment."""
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check",
                           *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def installed(python: Path) -> set[str]:
    listed = json.loads(pip(python, "list", "--format", "json"))
    return {row["name"].lower().replace("_", "-") for row in listed} - {"pip", "setuptools", "wheel"}


def requires(python: Path, distribution: str) -> dict[str, set[str]]:
    """What ``distribution`` needs, per extra ("" for itself), by project name."""
    code = ("import json, importlib.metadata as m, re\n"
            f"print(json.dumps(m.requires({distribution!r}) or []))")
    done = run(python, code)
    assert done.returncode == 0, done.stderr
    needs: dict[str, set[str]] = {}
    for line in json.loads(done.stdout):
        name = re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower().replace("_", "-")
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", line)
        needs.setdefault(extra.group(1) if extra else "", set()).add(name)
    return needs


def source_copy(where: Path) -> Path:
    """The tree as a clone has it (git's files): building it writes build/ and *.egg-info there, not here."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)
    return where


def run(python: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, encoding="utf-8", cwd=Path("/"))


@pytest.mark.slow
def test_the_client_alone_installs_with_urllib3_and_tenacity_only(tmp_path):
    python = fresh_venv(tmp_path / "venv")
    tree = source_copy(tmp_path / "tree")
    pip(python, "install", "-q", str(tree / "sdk"))
    assert installed(python) == {"telegram-session-manager-client", "urllib3", "tenacity"}
    done = run(python, "import telegram_session_manager as t; print(t.TelegramSessionManagerClient.__name__)")
    assert done.stdout.strip() == "TelegramSessionManagerClient", done.stderr
    assert run(python, "import telegate").returncode != 0  # no server on a worker machine
    # The ready clients say what to install, in one line, instead of an ImportError traceback.
    done = run(python, "from telegram_session_manager import ready\n"
                       "try:\n    ready.build_telethon({})\nexcept ready.ReadyClientError as e:\n    print(e)")
    assert "pip install 'telegram-session-manager-client[telethon]'" in done.stdout, done.stderr
    # Its extras bring the library and python-socks (kurigram: import name pyrogram).
    needs = requires(python, "telegram-session-manager-client")
    assert needs == {"": {"urllib3", "tenacity"}, "telethon": {"telethon", "python-socks", "cryptg"},
                     "pyrogram": {"kurigram", "python-socks", "tgcrypto"}}


@pytest.mark.slow
def test_pip_install_at_the_top_still_installs_everything(tmp_path):
    python = fresh_venv(tmp_path / "venv")
    pip(python, "install", "-q", str(source_copy(tmp_path / "tree")))
    assert {"telegate", "bottle", "waitress", "urllib3", "tenacity"} <= installed(python)
    done = run(python, "import telegate, telegram_session_manager.ready; print('ok')")
    assert done.stdout.strip() == "ok", done.stderr
    needs = requires(python, "telegate")
    assert needs["telethon"] == {"telethon", "python-socks", "cryptg"}
    assert needs["pyrogram"] == {"kurigram", "python-socks", "tgcrypto"}
