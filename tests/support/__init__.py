"""What the tests share, importable by any test module (fixtures stay in ``tests/conftest.py``).

* ``server``: ``LiveServer`` (a real ``telegate serve`` subprocess), ``Response``, ``ROOT``, ``server_env``;
* ``wsgi``: ``WsgiCaller``, the Bottle app called in process on a ``FakeClock``;
* ``clock``: ``FakeClock``, ``Sleeps`` (an injected sleep that records) and ``eventually`` (a deadline);
* ``pgtools``: the PostgreSQL the tests use; ``history`` and ``reliability``: the lease-history check
  and the load helpers of the reliability suite.
"""
from .clock import FakeClock, Sleeps, eventually
from .server import ROOT, STARTUP_DEADLINE, LiveServer, Response, server_env, wait_for_log
from .wsgi import WsgiCaller

__all__ = ["ROOT", "STARTUP_DEADLINE", "FakeClock", "LiveServer", "Response", "Sleeps", "WsgiCaller",
           "eventually", "server_env", "wait_for_log"]
