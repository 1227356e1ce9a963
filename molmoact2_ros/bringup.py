"""One description of which nodes run with which parameters.

Both ``launch/bringup.launch.py`` (ROS 2 installs) and ``molmoact2-ros bringup`` / ``demo`` (pip-only
installs, no ``launch`` package) read :func:`describe`, so the two cannot drift apart. No rclpy here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ConfigError

PACKAGE = "molmoact2_ros"

# Fast DDS transport profiles in config/dds/ (benchmarks/results/perception.md: why, and the numbers).
DEFAULT_DDS_PROFILE = "local_large_data"
DDS_PROFILES = {"local_large_data": "fastdds_local_large_data.xml"}
# glibc malloc: serve allocations up to 16 MiB from the heap and keep up to 64 MiB of freed memory.
# Every received 640x480 frame is two fresh ~900 KiB buffers (rmw's deserialized message, rclpy's
# Python copy); with glibc's defaults each is a new mmap, and the page faults filling it cost more than
# the copy. Measured on three 640x480 cameras: DDS receive -> subscriber callback 2.5x shorter
# (p50 5.6 -> 2.1 ms), subscriber CPU halved (benchmarks/results/perception.md).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864"
# Any of these in the environment means the user chose the Fast DDS configuration: leave it alone.
# FASTRTPS_DEFAULT_PROFILES_FILE is what Fast DDS 2.x (Humble, Jazzy) reads; 3.x (Kilted) reads FASTDDS_.
FASTDDS_CHOICE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")


@dataclass(frozen=True)
class NodeSpec:
    """A node to start: ``executable`` is the console script; ``module`` runs it without one."""

    name: str
    executable: str
    module: str
    parameters: dict[str, Any] = field(default_factory=dict)
    needs_torch: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra environment for this node's process


@dataclass(frozen=True)
class BringupOptions:
    embodiment: str = "so101"
    backend: str = ""  # '' = the embodiment's hardware.backend
    # The real arm family's backend against its emulated device (no robot); backend '' = the embodiment's family.
    emulate_hardware: bool = False
    camera_source: str = ""  # '' = per camera, from the embodiment
    checkpoint: str = ""  # '' = the embodiment's default checkpoint; 'tiny' = built-in tiny one
    device: str = "cpu"
    dtype: str = "fp32"
    instruction: str = "pick up the red cube and place it in the bowl"
    max_inference_rate_hz: float = 0.0
    torch_num_threads: int = 0  # 0 = torch's default; 1 leaves a core to the driver on small hosts
    shadow_mode: str = ""  # '' = embodiment default; 'true' / 'false'
    camera_fps: float = 0.0  # 0 = the embodiment's fps
    with_perception: bool = True
    with_policy: bool = True
    with_driver: bool = True
    dds_profile: str = DEFAULT_DDS_PROFILE  # '' = Fast DDS as the environment configures it
    # Simulated station: the sim node (MuJoCo physics, rendered cameras) replaces perception and the arm; the
    # driver commands it through the mujoco backend (or --backend ros_topic with the sim's topics).
    sim: bool = False
    gym_config: str = ""  # with sim: a gymnasium env mapping (config/gym/) instead of the embodiment's scene


# A simulated station's differences from a real one, and why:
# - the scene can take a while to build (mesh compilation) while the driver already runs: its backend
#   may wait this long for the first joint states before latching hardware_not_ready;
SIM_HARDWARE_READY_TIMEOUT_S = 300.0
# - software rendering on a CPU delivers frames later than a camera: the policy accepts older ones;
SIM_CAMERA_MAX_AGE_S = 3.0
# - a rendered scene that does not move renders identical pixels, which is not a hung driver: the
#   policy's frozen-camera check is off (the sim node's own freeze check is off too).
SIM_FROZEN_FRAME_LIMIT = 0


def dds_profile_path(profile: str) -> Path:
    """The XML file of a shipped Fast DDS profile: the source tree, then the installed share copy."""
    if profile not in DDS_PROFILES:
        raise ConfigError(f"unknown DDS profile {profile!r}; shipped ones: {', '.join(DDS_PROFILES)} "
                          "('' = no profile)")
    name = DDS_PROFILES[profile]
    dirs = [Path(__file__).resolve().parents[1] / "config" / "dds",
            Path(sys.prefix) / "share" / PACKAGE / "config" / "dds"]
    for d in dirs:
        if (d / name).is_file():
            return d / name
    try:  # a colcon/ament install
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory(PACKAGE)) / "config" / "dds" / name
        if shared.is_file():
            return shared
    except (ImportError, LookupError, OSError):  # no ament index here, or the package is not in it
        pass
    raise ConfigError(f"DDS profile {name} not found in {', '.join(map(str, dirs))} or the ament index")


def dds_environment(profile: str, current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment that makes every node's Fast DDS participant load ``profile``.

    Empty when ``profile`` is '' or ``current`` (default: this process's environment) already chooses
    a Fast DDS configuration (a profiles file or FASTDDS_BUILTIN_TRANSPORTS): an explicit choice wins.
    """
    current = os.environ if current is None else current
    if not profile or any(current.get(k) for k in FASTDDS_CHOICE_VARS):
        return {}
    path = str(dds_profile_path(profile))
    return {"FASTDDS_DEFAULT_PROFILES_FILE": path, "FASTRTPS_DEFAULT_PROFILES_FILE": path}


def node_environment(profile: str, current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Everything a node process of the bringup gets on top of its environment: the Fast DDS profile
    (:func:`dds_environment`) and, unless GLIBC_TUNABLES is already set, :data:`MALLOC_TUNABLES`."""
    current = os.environ if current is None else current
    env = dds_environment(profile, current)
    if profile and not current.get("GLIBC_TUNABLES"):
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    return env


def describe(opts: BringupOptions) -> list[NodeSpec]:
    """The node list for one embodiment station. Validates the embodiment file first."""
    emb = load_embodiment(opts.embodiment)
    env = node_environment(opts.dds_profile)
    # Nodes get the resolved path so a custom YAML works identically in every process.
    emb_ref = emb.source_path or opts.embodiment
    specs: list[NodeSpec] = []
    if opts.sim and opts.emulate_hardware:
        raise ConfigError("--sim and --emulate-hardware exclude each other: the simulation is the hardware; "
                          "pick one")
    if opts.gym_config and not opts.sim:
        raise ConfigError("gym_config needs sim (the gymnasium env runs inside the sim node); add --sim")
    if opts.sim:
        specs.append(NodeSpec(
            name="molmoact2_sim", executable="sim_node", module="molmoact2_ros.nodes.sim_node",
            parameters={"embodiment": emb_ref, "camera_fps": float(opts.camera_fps), "gym_config": opts.gym_config},
            env=dict(env),
        ))
    if opts.with_perception and not opts.sim:
        specs.append(NodeSpec(
            name="molmoact2_perception", executable="perception_node",
            module="molmoact2_ros.nodes.perception_node",
            parameters={"embodiment": emb_ref, "source": opts.camera_source, "fps": float(opts.camera_fps)},
            env=dict(env),
        ))
    if opts.with_policy:
        specs.append(NodeSpec(
            name="molmoact2_policy", executable="policy_node", module="molmoact2_ros.nodes.policy_node",
            parameters={
                "embodiment": emb_ref, "checkpoint": opts.checkpoint, "device": opts.device,
                "dtype": opts.dtype, "instruction": opts.instruction,
                "max_inference_rate_hz": float(opts.max_inference_rate_hz), "autostart": True,
                "torch_num_threads": int(opts.torch_num_threads),
                **({"camera_max_age_s": SIM_CAMERA_MAX_AGE_S, "frozen_frame_limit": SIM_FROZEN_FRAME_LIMIT}
                   if opts.sim else {}),
            },
            needs_torch=True,
            env=dict(env),
        ))
    if opts.with_driver:
        backend = opts.backend or ("mujoco" if opts.sim else "")
        if opts.emulate_hardware and not backend:
            from molmoact2_ros.backends.hardware import emulated_backend_for

            backend = emulated_backend_for(emb)
        params: dict[str, Any] = {"embodiment": emb_ref, "backend": backend, "autostart": True,
                                  "emulate_hardware": bool(opts.emulate_hardware)}
        if opts.shadow_mode:
            params["shadow_mode"] = opts.shadow_mode == "true"
        if opts.sim:
            params["hardware_ready_timeout_s"] = SIM_HARDWARE_READY_TIMEOUT_S
        specs.append(NodeSpec(
            name="molmoact2_driver", executable="driver_node", module="molmoact2_ros.nodes.driver_node",
            parameters=params, env=dict(env),
        ))
    return specs


def params_file_content(specs: list[NodeSpec]) -> dict[str, Any]:
    """A ROS 2 parameters file (YAML mapping) holding every node's parameters, keyed by node name."""
    return {spec.name: {"ros__parameters": dict(spec.parameters)} for spec in specs}
