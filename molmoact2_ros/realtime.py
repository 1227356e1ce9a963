"""Real-time scheduling for the threads that must not wait behind other software: the driver's control loop,
camera workers and receivers, Franka's 1 kHz loop. One place, so every caller asks and reports the same way.
No rclpy here."""

from __future__ import annotations

import os

MAX_PRIORITY = 99
# For the threads that share a real-time thread's process (and GIL) without being on its deadline: emulated
# devices, the Franka Hand's threads. At normal priority a busy machine deschedules one while it holds the GIL
# and the real-time thread waits behind it (driver ticks 400-700 ms late under a CPU hog with emulated devices;
# 1.4 ms with this). Below the driver's control (50) and executor (49) threads and Franka's 1 kHz loop (80).
GIL_SHARING_THREAD_PRIORITY = 45


def set_thread_fifo(priority: int, purpose: str = "steady timing on a loaded machine") -> str:
    """SCHED_FIFO ``priority`` for the calling thread (Linux schedules threads individually: pid 0 is this
    thread). Returns '' when granted, else one line saying why not and how to allow it."""
    if not 1 <= priority <= MAX_PRIORITY:
        return f"SCHED_FIFO priority must be 1-{MAX_PRIORITY}, got {priority}"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:  # AttributeError: no SCHED_FIFO on this OS
        return (f"SCHED_FIFO {priority} refused ({exc}); grant CAP_SYS_NICE or an rtprio limit "
                f"(ulimit -r {priority}) for {purpose}")
    return ""
