"""Windows has no ``select.poll``: on ``PYTHONPATH``, this makes any Python started here lack it too.

Used by tests/live/test_windows_consoles.py for a server subprocess, and by ``.ci/run`` for a
run of the server tests (servers they start inherit ``PYTHONPATH``), so waitress's select()
fallback and the 500-connection cap are exercised on Linux.
"""
import select

if hasattr(select, "poll"):
    del select.poll
