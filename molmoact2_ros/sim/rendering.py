"""Offscreen rendering of a MuJoCo scene on the CPU (EGL, or OSMesa as the fallback), one image per named camera.

MuJoCo picks its OpenGL platform from ``MUJOCO_GL`` when ``mujoco`` is first imported, and PyOpenGL from
``PYOPENGL_PLATFORM`` when ``OpenGL`` is first imported; neither can change later in the process. So
``select_gl_backend`` must run before either import: ``molmoact2_ros.sim`` calls it on import. It keeps a
``MUJOCO_GL`` the user set, else takes EGL (Mesa's software device renders without a GPU or display) and falls
back to OSMesa when libEGL is missing.

``OffscreenRenderer`` owns one GL context and framebuffer sized for the largest camera. Shadows and reflections
are off: on a software rasteriser they cost 4-17x the frame time and a policy does not need them.
"""

from __future__ import annotations

import atexit
import ctypes.util
import os
import threading
import weakref
from typing import TYPE_CHECKING

import numpy as np

from molmoact2_ros.core.errors import ConfigError

if TYPE_CHECKING:
    import mujoco

GL_PACKAGES_HINT = ("install Debian's libegl1 libegl-mesa0 libgl1-mesa-dri (EGL) or libosmesa6 and set "
                    "MUJOCO_GL=osmesa")
_SUPPORTED = ("egl", "osmesa")


class RenderingError(ConfigError):
    """No offscreen OpenGL context could be created for the simulation cameras."""


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) for headless rendering, before mujoco is imported."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen not in _SUPPORTED:
        if chosen:
            # glfw/glx need a display, which a robot PC's service or CI does not have: say so instead of hanging.
            raise RenderingError(f"MUJOCO_GL={chosen!r} is not an offscreen platform; unset it or use one of "
                                 f"{list(_SUPPORTED)}")
        if ctypes.util.find_library("EGL"):
            chosen = "egl"
        elif ctypes.util.find_library("OSMesa"):
            chosen = "osmesa"
        else:
            chosen = "egl"  # fails later with the packages to install
        os.environ["MUJOCO_GL"] = chosen
    os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


def _make_context(width: int, height: int):
    backend = select_gl_backend()
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.osmesa import GLContext
        context = GLContext(width, height)
        context.make_current()
    except Exception as exc:  # PyOpenGL raises ImportError, AttributeError, GLError, RuntimeError ...
        raise RenderingError(f"cannot create an offscreen {backend.upper()} OpenGL context "
                             f"({type(exc).__name__}: {exc}); {GL_PACKAGES_HINT}") from exc
    return context


# Renderers still open at exit are closed before mujoco.egl's own atexit hook terminates the EGL display
# (atexit runs hooks last-in first-out, and ours is registered after mujoco.egl is imported).
_OPEN_RENDERERS: weakref.WeakSet[OffscreenRenderer] = weakref.WeakSet()


def _close_all() -> None:
    for renderer in list(_OPEN_RENDERERS):
        renderer.close()


class OffscreenRenderer:
    """Renders RGB images of a model's named cameras; one GL context, reused for every camera and frame.

    GL contexts belong to a thread: ``render`` makes the context current on the calling thread each time and a lock
    keeps two threads from rendering at once, so a renderer may be created on one thread and used on another.
    """

    def __init__(self, model: mujoco.MjModel, max_width: int, max_height: int) -> None:
        import mujoco

        self._mujoco = mujoco
        self._model = model
        self._lock = threading.Lock()
        self._context = _make_context(max_width, max_height)
        self._scene = mujoco.MjvScene(model, maxgeom=10_000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._gl = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._gl)
        self._max = (max_width, max_height)
        if not _OPEN_RENDERERS:
            atexit.register(_close_all)
        _OPEN_RENDERERS.add(self)
        if self._gl.offWidth < max_width or self._gl.offHeight < max_height:
            raise RenderingError(f"offscreen buffer {self._gl.offWidth}x{self._gl.offHeight} is smaller than the "
                                 f"largest camera {max_width}x{max_height}: set visual.global offwidth/offheight")

    def render(self, data: mujoco.MjData, camera_id: int, width: int, height: int) -> np.ndarray:
        """An ``height x width x 3`` uint8 image from camera ``camera_id`` of ``data``'s current state."""
        mujoco = self._mujoco
        if width > self._max[0] or height > self._max[1]:
            raise RenderingError(f"image {width}x{height} is larger than the renderer's buffer {self._max}")
        image = np.empty((height, width, 3), dtype=np.uint8)
        with self._lock:
            self._context.make_current()
            self._camera.fixedcamid = camera_id
            mujoco.mjv_updateScene(self._model, data, self._option, None, self._camera,
                                   mujoco.mjtCatBit.mjCAT_ALL, self._scene)
            viewport = mujoco.MjrRect(0, 0, width, height)
            mujoco.mjr_render(viewport, self._scene, self._gl)
            mujoco.mjr_readPixels(image, None, viewport, self._gl)
        # OpenGL's rows run bottom-up; images run top-down. A contiguous copy: callers hand it to ROS as bytes.
        return np.ascontiguousarray(image[::-1])

    def close(self) -> None:
        """Free the GL resources (idempotent)."""
        with self._lock:
            if self._context is None:
                return
            self._context.make_current()
            self._gl.free()
            self._context.free()
            self._context = None

