"""Engine threads get the intra-op threads; the main thread keeps one (executor/threads.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import torch
from seallm.executor import threads
# A count torch's default cannot be: an engine thread that never took the reserved count
# shows something else, and a reserve that read the count after setting the main thread's to
# one returns 1.
want = torch.get_num_threads() + 1
torch.set_num_threads(want)
n = threads.reserve_for_engine()
assert n == want, (n, want)  # the engine threads get the count the process had
assert torch.get_num_threads() == 1 and threads.reserve_for_engine() == n  # main keeps one
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
    assert int(out.stdout.split()[1]) >= 2  # torch's default plus one, never a single thread


def test_without_reserving_engine_threads_keep_torchs_default():
    from seallm.executor.threads import run_in_engine_thread

    assert run_in_engine_thread(lambda: 41 + 1) == 42
    with pytest.raises(KeyError):
        run_in_engine_thread(lambda: {}["missing"])
