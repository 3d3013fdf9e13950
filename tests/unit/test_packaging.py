"""`pip install .` ships every package of the tree (setup.cfg lists them by hand)."""
from __future__ import annotations

import configparser

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
