"""TeleGate client SDK: lease Telegram accounts from a TeleGate pool.

``TelegramSessionManagerClient`` (threads) and ``AsyncTelegramSessionManagerClient``
(asyncio) share one API; every error is a :class:`TeleGateError`.
"""
from __future__ import annotations

from .aio import AsyncTelegramSessionManagerClient
from .client import (
    APIError,
    AuthenticationError,
    BadRequest,
    ClientClosed,
    Lease,
    LeaseLimitReached,
    WaitLimitReached,
    LeaseLost,
    NoSessionAvailable,
    NotFound,
    NotLeaseHolder,
    Outcome,
    PermissionDenied,
    RetryPolicy,
    ServerError,
    TelegramSessionManagerClient,
    TeleGateConnectionError,
    TeleGateError,
    __version__,
    classify_exception,
    tl_method,
)

__all__ = [
    "TelegramSessionManagerClient",
    "AsyncTelegramSessionManagerClient",
    "Lease",
    "Outcome",
    "RetryPolicy",
    "classify_exception",
    "tl_method",
    "TeleGateError",
    "TeleGateConnectionError",
    "ClientClosed",
    "APIError",
    "BadRequest",
    "AuthenticationError",
    "PermissionDenied",
    "NotFound",
    "LeaseLost",
    "NotLeaseHolder",
    "LeaseLimitReached",
    "WaitLimitReached",
    "ServerError",
    "NoSessionAvailable",
    "__version__",
]
