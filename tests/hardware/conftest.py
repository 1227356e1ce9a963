"""Every emulated device a test starts is stopped by the end of it: emulator threads run SCHED_FIFO where the
OS allows (``emulated.run_like_hardware``), and one left behind (a 1 kHz Franka generator did) takes CPU from
every later test of the run."""

from __future__ import annotations

import threading
import time

import pytest

# Thread names of the emulators and of the Franka backend's own threads.
DEVICE_THREAD_PREFIXES = ("emulated-", "sts3215-bus", "franka-")


def _device_threads(before: set[int]) -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.ident not in before and t.name.startswith(DEVICE_THREAD_PREFIXES) and t.is_alive()]


@pytest.fixture(autouse=True)
def no_device_thread_outlives_its_test():
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    yield
    deadline = time.monotonic() + 5.0  # a stopping thread finishes its last cycle
    while (left := _device_threads(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"emulated device threads outlived the test: {sorted(t.name for t in left)}"
