"""Simulation camera: frames handed over by whatever renders a simulation (the sim node's render thread).

The renderer calls :meth:`SimCamera.deliver` with each new image and the wall-clock time of the physics
state it shows; the camera stream's worker blocks in :meth:`read` until a new frame arrives (a paced
source, like a device). So the stream code (stamping, publishing, rate and drop counting, diagnostics)
is the same as for a real camera, and a renderer slower than the configured fps shows up as a low rate
in ``/diagnostics`` instead of repeated frames.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from molmoact2_ros.backends.cameras.base import CameraOpenError, CameraOptions, CameraReadError, CameraSource, Frame
from molmoact2_ros.core.embodiment import CameraConfig


class SimCamera(CameraSource):
    """A camera whose frames are pushed in by a simulation renderer."""

    paced = True

    def __init__(self, config: CameraConfig, options: CameraOptions | None = None):
        super().__init__(config, options)
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._capture_time_s: float | None = None
        self._sequence = 0  # frames delivered so far
        self._read_sequence = 0  # the sequence of the last frame read
        self._open = False
        self.available = True  # False: open() fails (the renderer is gone)

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if not self.available:
            raise CameraOpenError(f"sim camera {self.name}: the simulation's renderer is not running")
        with self._cond:
            self._open = True
            self._read_sequence = self._sequence

    def deliver(self, image: np.ndarray, capture_time_s: float | None = None) -> None:
        """Hand over a new frame (``image`` is owned by the camera from now on)."""
        with self._cond:
            self._image = image
            self._capture_time_s = time.time() if capture_time_s is None else capture_time_s
            self._sequence += 1
            self._cond.notify_all()

    def read(self) -> Frame:
        deadline = time.monotonic() + self.options.read_timeout_s
        with self._cond:
            while self._open and self._sequence == self._read_sequence:
                remaining = deadline - time.monotonic()
                timed_out = remaining <= 0 or not self._cond.wait(remaining)
                if timed_out and self._sequence == self._read_sequence:
                    raise CameraReadError(f"sim camera {self.name}: no new frame rendered within "
                                              f"{self.options.read_timeout_s:g} s")
            if not self._open:
                raise CameraReadError(f"sim camera {self.name}: closed")
            self._read_sequence = self._sequence
            assert self._image is not None
            return Frame(image=self._image, capture_time_s=self._capture_time_s, sequence=self._sequence)

    def close(self) -> None:
        with self._cond:
            self._open = False
            self._cond.notify_all()
