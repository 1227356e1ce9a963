"""Emulated hardware devices that real backends connect to through their unmodified hardware libraries
(``make_hardware(..., emulate=True)``, ``molmoact2-ros demo --hardware emulated``). Each module here is one
device family's emulator; it runs in the backend's own process, in a thread."""

from molmoact2_ros.realtime import GIL_SHARING_THREAD_PRIORITY, set_thread_fifo


def run_like_hardware() -> None:
    """Call first in an emulator's thread. A real device runs on its own silicon; an emulator shares the
    driver's process and GIL, so it runs at ``GIL_SHARING_THREAD_PRIORITY`` where the OS allows it (the
    driver's tick must not wait behind a descheduled emulator); where it does not, as before."""
    set_thread_fifo(GIL_SHARING_THREAD_PRIORITY, "an emulated device")
