"""Emulated hardware devices that real backends connect to through their unmodified hardware libraries
(``make_hardware(..., emulate=True)``, ``molmoact2-ros demo --hardware emulated``). Each module here is one
device family's emulator; it runs in the backend's own process, in a thread."""

from molmoact2_ros.realtime import set_thread_fifo

# Below the driver's control (50) and executor (49) threads: the device answers, the driver decides.
EMULATOR_THREAD_PRIORITY = 45


def run_like_hardware() -> None:
    """Call first in an emulator's thread. A real device runs on its own silicon; an emulator shares the
    driver's process and GIL. At normal priority, a busy machine deschedules it while it holds the GIL and the
    driver's real-time control thread waits behind it (ticks 400-700 ms late under a CPU hog: the emulated DM
    motors' command timeout then fired). With SCHED_FIFO where the OS allows it, that inversion is gone;
    where it does not, the emulator runs as before."""
    set_thread_fifo(EMULATOR_THREAD_PRIORITY, "an emulated device")
