"""Telegram Desktop ``tdata`` folders, through the optional extra ``telegate[tdata]``.

The extra installs ``opentele-ng``, a Qt-free reader of Telegram Desktop's storage (the
original ``opentele`` needs PyQt5). A ``tdata`` folder holds up to three logged-in
accounts; each becomes one account with Telegram Desktop's own app (api_id 2040) and
the device fingerprint the converter gives it.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from ._formats import FormatError, dc_address, new_account

__all__ = ["is_tdata", "tdata_available", "read_tdata", "INSTALL_HINT"]

INSTALL_HINT = "a Telegram Desktop tdata folder: install the extra to read it: pip install 'telegate[tdata]'"


def is_tdata(folder: Path) -> bool:
    """Whether ``folder`` is a Telegram Desktop data folder (it holds ``key_datas``)."""
    return (folder / "key_datas").is_file()


def tdata_available() -> bool:
    try:
        import opentele.td  # noqa: F401
    except ImportError:
        return False
    return True


def read_tdata(folder: Path, passcode: str | None = None) -> list[dict[str, Any]]:
    """The accounts logged in to the ``tdata`` ``folder``, in Telegram Desktop's order."""
    try:
        from opentele.exception import TDataBadDecryptKey
        from opentele.td import TDesktop
    except ImportError:
        raise FormatError(INSTALL_HINT) from None
    try:
        desktop = TDesktop(str(folder), passcode=passcode or "")
    except TDataBadDecryptKey:
        raise FormatError("the tdata folder is locked with a local passcode") from None
    except Exception as exc:  # noqa: BLE001 (a third-party parser of damaged files raises anything)
        raise FormatError(f"not a readable tdata folder ({type(exc).__name__})") from None
    accounts = []
    for account in desktop.accounts:
        key = account.authKey.key if account.authKey is not None else b""
        if len(key) != 256:
            continue
        dc_id = int(account.MainDcId)
        address, port = dc_address(dc_id)
        api = account.api
        accounts.append(new_account(
            dc_id=dc_id, server_address=address, port=port, auth_key=base64.b64encode(key).decode("ascii"),
            user_id=int(account.UserId) or None, is_bot=False, test_mode=False, api_id=api.api_id,
            api_hash=api.api_hash, device_model=api.device_model, system_version=api.system_version,
            app_version=api.app_version, lang_code=api.lang_code, system_lang_code=api.system_lang_code,
            lang_pack=api.lang_pack, state={"entities": [], "update_state": None}))
    if not accounts:
        raise FormatError("a tdata folder with no logged-in account")
    return accounts
