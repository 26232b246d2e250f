"""Engine threads get the intra-op threads; the main thread keeps one (executor/threads.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import torch
from seallm.executor import threads
n = threads.reserve_for_engine()
assert n == torch.get_num_threads() or torch.get_num_threads() == 1
assert torch.get_num_threads() == 1 and threads.reserve_for_engine() == n
inside = threads.run_in_engine_thread(torch.get_num_threads)
assert inside == n, (inside, n)
try:
    threads.run_in_engine_thread(lambda: 1 / 0)
except ZeroDivisionError:
    print("ok", n)
"""


def test_engine_thread_gets_the_threads_and_errors_come_back():
    # A fresh process: reserving changes the process's torch threads for good.
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")
    assert int(out.stdout.split()[1]) >= 1


def test_without_reserving_engine_threads_keep_torchs_default():
    from seallm.executor.threads import run_in_engine_thread

    assert run_in_engine_thread(lambda: 41 + 1) == 42
    with pytest.raises(KeyError):
        run_in_engine_thread(lambda: {}["missing"])
