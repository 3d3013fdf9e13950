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
