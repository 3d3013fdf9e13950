"""Every benchmark still runs: each bench/*.py in --quick mode, which prints its table.

These check that the scripts work, not how fast anything is (speed is measured by the
benchmarks themselves, as ratios, and written up in docs/PERFORMANCE.md).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from support import ROOT, server_env

BENCHES = sorted(path.name for path in (ROOT / "bench").glob("*.py") if not path.name.startswith("_"))


def test_purposes_benchmark_reports_every_round_and_the_capacity_kept(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "purposes.py"), "--quick", "--layers", "store",
                           "--sessions", "10", "--resting", "6", "--seconds", "0.2", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=server_env(), cwd=ROOT, encoding="utf-8")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[:5] == ["round", "1", "2", "3", "median"], done.stdout
    assert "history readers keep 10 sessions instead of 4: 2.5x the capacity" in done.stdout


def test_the_benchmarks_are_found():
    assert {"http_cycle.py", "scale.py", "store_cycle.py", "sdk_overhead.py", "fleet.py"} <= set(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_quick_mode_prints_its_table(name, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--quick", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=server_env(), cwd=ROOT, encoding="utf-8")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# Benchmark"), done.stdout
    table = [line for line in lines if line.startswith("|")]
    assert len(table) >= 3, done.stdout  # header, rule, at least one row


def test_http_cycle_compares_with_another_tree(tmp_path):
    """--baseline-tree makes that tree's pool with that tree's code, and prints the CPU comparison."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "http_cycle.py"), "--quick", "--client-kinds", "thin",
                           "--clients", "1", "--baseline-tree", str(ROOT), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=server_env(), cwd=ROOT, encoding="utf-8")
    assert done.returncode == 0, done.stdout + done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("| client"))
    assert "TG/baseline" in header and "TG/baseline CPU" in header
