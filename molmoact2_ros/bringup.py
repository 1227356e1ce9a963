"""One description of which nodes run with which parameters.

Both ``launch/bringup.launch.py`` (ROS 2 installs) and ``molmoact2-ros bringup`` / ``demo`` (pip-only
installs, no ``launch`` package) read :func:`describe`, so the two cannot drift apart. The description is
plain data (:class:`NodeSpec`: executable, name, parameters, lifecycle flag, environment, extra parameter
files), so a test can compare what each consumer makes of it (tests/unit/test_launch_parity.py). No rclpy here.

Modes (:data:`MODES`): ``real`` (perception, policy and driver on the embodiment's hardware backend), ``sim``
(the sim node replaces perception and the arm), ``replay`` (``molmoact2-ros replay BAG`` publishes the bag's
cameras and joint states with ``/clock``; the policy node runs on ``use_sim_time``; the bag stands in for
the cameras and the arm, so neither perception nor the driver is started).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ConfigError

MODES = ("real", "sim", "replay")
PACKAGE = "molmoact2_ros"

# Fast DDS transport profiles in config/dds/ (benchmarks/results/perception.md: why, and the numbers).
DEFAULT_DDS_PROFILE = "local_large_data"
DDS_PROFILES = {
    "local_large_data": "fastdds_local_large_data.xml",
    # The same with Fast DDS's reception threads at SCHED_FIFO 20: chosen instead of local_large_data where the
    # host grants real-time priority (benchmarks P2: the frame tail on a loaded machine).
    "local_large_data_rt": "fastdds_local_large_data_rt.xml",
    # Policy host and robot PC on two machines: UDP only (docs/two_hosts.md).
    "two_hosts": "fastdds_two_hosts.xml",
}
REALTIME_VARIANTS = {"local_large_data": "local_large_data_rt"}
DDS_RECEPTION_PRIORITY = 20
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
    """A node to start: ``executable`` is the console script; ``module`` runs it without one.

    ``lifecycle``: a managed node (launch starts it as a ``LifecycleNode``); it configures and activates
    itself when its ``autostart`` parameter is true. ``params_files``: the user's parameter files, applied
    after ``parameters`` (a later file wins, as with ``--params-file`` and launch's ``parameters=[...]``).
    ``ros_node`` false: a plain process (the bag player) that takes ``arguments`` and no ``--ros-args``.
    """

    name: str
    executable: str
    module: str
    parameters: dict[str, Any] = field(default_factory=dict)
    needs_torch: bool = False
    env: dict[str, str] = field(default_factory=dict)  # extra environment for this node's process
    lifecycle: bool = False
    params_files: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    ros_node: bool = True


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
    mode: str = ""  # one of MODES; '' = 'sim' when sim is set, else 'real'
    bag: str = ""  # replay: the bag to publish (with /clock)
    replay_rate: float = 1.0
    replay_loop: bool = False
    use_sim_time: bool = False  # every node on /clock (replay sets it)
    params_file: str = ""  # a ROS 2 parameters file ({node: {ros__parameters: ...}}, '/**' for all) on top
    autostart: bool = True  # lifecycle nodes configure + activate themselves; false: wait for a lifecycle manager


# Every BringupOptions field is a launch argument (``name:=value``); the CLI's flags are the same names with
# dashes. Descriptions here, so `ros2 launch ... --show-args` and the parity test read one table.
LAUNCH_ARGUMENT_HELP = {
    "embodiment": "built-in embodiment name or path to an embodiment YAML",
    "mode": "real (drivers on the hardware backends), sim (MuJoCo sim node) or replay (a bag with /clock); "
            "'' = sim when sim:=true, else real",
    "backend": "hardware backend (mock, ros_topic, feetech, i2rt, franka, mujoco); '' = the embodiment's",
    "emulate_hardware": "true: the real arm family's backend against its emulated device (no robot)",
    "camera_source": "camera source for every camera; '' = per camera from the embodiment",
    "checkpoint": "checkpoint dir, Hugging Face id, or 'tiny'; '' = the embodiment's default",
    "device": "torch device for the policy node (cuda on a GPU host)",
    "dtype": "fp32 or bf16",
    "instruction": "initial task in words",
    "max_inference_rate_hz": "cap on the policy's inference rate; 0 = none",
    "torch_num_threads": "torch CPU threads in the policy node; 0 = torch's default",
    "shadow_mode": "'' = embodiment default (on for real hardware), 'true' or 'false'",
    "camera_fps": "camera fps override; 0 = the embodiment's",
    "with_perception": "start the perception node on this host (mode real)",
    "with_policy": "start the policy node on this host (false on a robot PC whose policy runs elsewhere)",
    "with_driver": "start the driver node on this host (false on a GPU host)",
    "dds_profile": "Fast DDS profile from config/dds ('' = none); ignored when the environment already sets "
                   "FASTDDS_DEFAULT_PROFILES_FILE or FASTDDS_BUILTIN_TRANSPORTS",
    "sim": "true: mode sim (kept for older command lines)",
    "gym_config": "with mode sim, a gymnasium env mapping (config/gym/<name>.yaml) instead of the embodiment's scene",
    "bag": "mode replay: the bag directory to publish with /clock",
    "replay_rate": "mode replay: speed factor (1 = real time)",
    "replay_loop": "mode replay: start the bag again at its end",
    "use_sim_time": "every node on /clock (mode replay always is)",
    "params_file": "a ROS 2 parameters file ({node: {ros__parameters: ...}}, '/**' for every node) applied "
                   "after the description's parameters; driver safety limits may only tighten the embodiment's",
    "autostart": "lifecycle nodes configure and activate themselves; false: they wait for a lifecycle manager",
}


def launch_argument_defaults() -> dict[str, str]:
    """Every launch argument with its default, as the string launch passes around."""
    out = {}
    for f in fields(BringupOptions):
        default = f.default
        out[f.name] = str(default).lower() if isinstance(default, bool) else (
            f"{default:g}" if isinstance(default, float) else str(default))
    return out


def options_from_strings(values: Mapping[str, str]) -> BringupOptions:
    """BringupOptions from launch argument strings (missing ones take their default). Bad values raise
    :class:`ConfigError` naming the argument."""
    unknown = set(values) - {f.name for f in fields(BringupOptions)}
    if unknown:
        raise ConfigError(f"unknown bringup argument(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(f.name for f in fields(BringupOptions))}")
    kwargs: dict[str, Any] = {}
    for f in fields(BringupOptions):
        if f.name not in values:
            continue
        text = str(values[f.name]).strip()
        kind = type(f.default)
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ConfigError(f"{f.name}:={text!r}: use true or false")
            kwargs[f.name] = text.lower() == "true"
        elif kind in (int, float):
            try:
                kwargs[f.name] = kind(text)
            except ValueError:
                raise ConfigError(f"{f.name}:={text!r}: expected a{'n integer' if kind is int else ' number'}") \
                    from None
        else:
            kwargs[f.name] = text
    return BringupOptions(**kwargs)


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
    from molmoact2_ros.resources import data_dirs

    dirs = data_dirs("config", "dds")
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise ConfigError(f"DDS profile {name} not found in {', '.join(map(str, dirs)) or 'the source tree'}, the "
                      "installed share directory or the ament index: reinstall molmoact2_ros")


def realtime_allowed(priority: int = DDS_RECEPTION_PRIORITY) -> bool:
    """Whether this host grants SCHED_FIFO ``priority`` (CAP_SYS_NICE or an rtprio limit; a container may refuse
    it even to root): asked for real, in a short-lived thread, so nothing else changes priority."""
    from molmoact2_ros.realtime import set_thread_fifo

    result: list[str] = []
    probe = threading.Thread(target=lambda: result.append(set_thread_fifo(priority)), daemon=True)
    probe.start()
    probe.join(5.0)
    return result == [""]


def dds_environment(profile: str, current: Mapping[str, str] | None = None,
                    realtime: bool | None = None) -> dict[str, str]:
    """Environment that makes every node's Fast DDS participant load ``profile`` (its real-time variant where
    the host grants SCHED_FIFO, or as ``realtime`` says).

    Empty when ``profile`` is '' or ``current`` (default: this process's environment) already chooses
    a Fast DDS configuration (a profiles file or FASTDDS_BUILTIN_TRANSPORTS): an explicit choice wins.
    """
    current = os.environ if current is None else current
    if not profile or any(current.get(k) for k in FASTDDS_CHOICE_VARS):
        return {}
    if profile in REALTIME_VARIANTS and (realtime if realtime is not None else realtime_allowed()):
        profile = REALTIME_VARIANTS[profile]
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


def resolve_mode(opts: BringupOptions) -> str:
    """The station's mode: ``opts.mode``, or 'sim' / 'real' from ``opts.sim``; contradictions are errors."""
    if opts.mode and opts.mode not in MODES:
        raise ConfigError(f"unknown mode {opts.mode!r}; use one of {', '.join(MODES)}")
    if opts.sim and opts.mode not in ("", "sim"):
        raise ConfigError(f"--sim contradicts mode {opts.mode!r}; drop one of them")
    mode = opts.mode or ("sim" if opts.sim else "real")
    if mode == "replay" and not opts.bag:
        raise ConfigError("mode replay needs a bag: pass bag:=DIR (launch) or --bag DIR (CLI)")
    if opts.bag and mode != "replay":
        raise ConfigError(f"a bag is only replayed in mode replay, not {mode!r}; add mode:=replay / --mode replay")
    if mode == "replay" and not Path(opts.bag).expanduser().exists():
        raise ConfigError(f"bag {opts.bag} not found; pass the bag directory (or its .mcap/.db3 file)")
    if mode == "replay" and opts.replay_rate <= 0:
        raise ConfigError(f"replay rate must be > 0, not {opts.replay_rate:g}")
    return mode


def load_params_file(path: str) -> dict[str, dict[str, Any]]:
    """A ROS 2 parameters file, checked: ``{node_name or '/**': {ros__parameters: {name: value}}}``.

    Returns ``{key: parameters}``. Raises :class:`ConfigError` naming the file and the fault, so a typo is
    found before any node starts instead of by a node that silently keeps its default."""
    import yaml

    f = Path(path).expanduser()
    if not f.is_file():
        raise ConfigError(f"params file {path} not found; pass a ROS 2 parameters YAML file")
    try:
        data = yaml.safe_load(f.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"params file {path}: expected a mapping {{node_name: {{ros__parameters: {{...}}}}}}")
    out: dict[str, dict[str, Any]] = {}
    for key, body in data.items():
        params = body.get("ros__parameters") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f"params file {path}: {key!r} needs a 'ros__parameters:' mapping under it")
        out[str(key)] = params
    return out


def check_params_file(path: str) -> dict[str, dict[str, Any]]:
    """:func:`load_params_file`, then what the file names checked against the nodes of this package: each
    key is ``/**`` (or another wildcard) or the name of a node this package starts, each parameter under a
    node's name one that node declares, each wildcard parameter one that some node it reaches declares.
    rclpy would silently ignore any other (a mistyped safety limit would not be in force); refused here
    with a ConfigError naming the closest known name, before any process starts."""
    from molmoact2_ros.nodes.param_check import (
        NODE_PARAMETERS,
        closest,
        flatten,
        is_wildcard_key,
        key_matches,
        not_declared_message,
    )

    content = load_params_file(path)
    for key, params in content.items():
        names = [n for n in NODE_PARAMETERS if key_matches(key, f"/{n}")]
        if not names:
            raise ConfigError(f"params file {path}: {key!r} is not a node this package starts"
                              f"{closest(key.strip('/'), NODE_PARAMETERS)}; use one of "
                              f"{', '.join(NODE_PARAMETERS)} or /** (every node)")
        declared = set().union(*(NODE_PARAMETERS[n] for n in names))
        unknown = sorted(set(flatten(params)) - declared)
        if unknown and is_wildcard_key(key):
            raise ConfigError(f"params file {path}: {key}: no node of {PACKAGE} declares "
                              + ", ".join(f"{n!r}{closest(n, declared)}" for n in unknown))
        if unknown:
            raise ConfigError(f"params file {path}: {not_declared_message(unknown, names[0], declared)}")
    return content


def _node_key_matches(key: str, name: str) -> bool:
    """Whether a parameters-file key applies to node ``name`` (in the root namespace)."""
    return key.lstrip("/") in (name, "**") or key in ("/**", f"/**/{name}")


def effective_parameters(spec: NodeSpec) -> dict[str, Any]:
    """The parameters ``spec``'s node ends up with: its own, then each params file's entries for it, in order."""
    params = dict(spec.parameters)
    for path in spec.params_files:
        for key, values in load_params_file(path).items():
            if _node_key_matches(key, spec.name):
                params.update(values)
    return params


def describe(opts: BringupOptions) -> list[NodeSpec]:
    """The node list for one embodiment station. Validates the embodiment file (and params file) first."""
    mode = resolve_mode(opts)
    emb = load_embodiment(opts.embodiment)
    env = node_environment(opts.dds_profile)
    # Nodes get the resolved path so a custom YAML works identically in every process.
    emb_ref = emb.source_path or opts.embodiment
    params_files: tuple[str, ...] = ()
    if opts.params_file:
        check_params_file(opts.params_file)  # refuse a malformed file or unknown names before anything starts
        params_files = (str(Path(opts.params_file).expanduser().resolve()),)
    sim = mode == "sim"
    use_sim_time = opts.use_sim_time or mode == "replay"
    if sim and opts.emulate_hardware:
        raise ConfigError("--sim and --emulate-hardware exclude each other: the simulation is the hardware; "
                          "pick one")
    if opts.gym_config and not sim:
        raise ConfigError("gym_config needs sim (the gymnasium env runs inside the sim node); add --sim")
    clock = {"use_sim_time": True} if use_sim_time else {}
    specs: list[NodeSpec] = []
    if mode == "replay":
        args = ["replay", str(Path(opts.bag).expanduser().resolve()), "--embodiment", str(emb_ref),
                "--rate", f"{opts.replay_rate:g}", "--quiet"]
        if opts.replay_loop:
            args.append("--loop")
        specs.append(NodeSpec(name="molmoact2_replay", executable="molmoact2-ros", module="molmoact2_ros.cli",
                              env=dict(env), arguments=tuple(args), ros_node=False))
    if sim:
        specs.append(NodeSpec(
            name="molmoact2_sim", executable="sim_node", module="molmoact2_ros.nodes.sim_node",
            parameters={"embodiment": emb_ref, "camera_fps": float(opts.camera_fps), "gym_config": opts.gym_config,
                        **clock},
            env=dict(env), params_files=params_files,
        ))
    if opts.with_perception and mode == "real":
        specs.append(NodeSpec(
            name="molmoact2_perception", executable="perception_node",
            module="molmoact2_ros.nodes.perception_node",
            parameters={"embodiment": emb_ref, "source": opts.camera_source, "fps": float(opts.camera_fps),
                        "autostart": bool(opts.autostart), **clock},
            env=dict(env), lifecycle=True, params_files=params_files,
        ))
    if opts.with_policy:
        specs.append(NodeSpec(
            name="molmoact2_policy", executable="policy_node", module="molmoact2_ros.nodes.policy_node",
            parameters={
                "embodiment": emb_ref, "checkpoint": opts.checkpoint, "device": opts.device,
                "dtype": opts.dtype, "instruction": opts.instruction,
                "max_inference_rate_hz": float(opts.max_inference_rate_hz), "autostart": bool(opts.autostart),
                "torch_num_threads": int(opts.torch_num_threads),
                **({"camera_max_age_s": SIM_CAMERA_MAX_AGE_S, "frozen_frame_limit": SIM_FROZEN_FRAME_LIMIT}
                   if sim else {}),
                **clock,
            },
            needs_torch=True,
            env=dict(env), lifecycle=True, params_files=params_files,
        ))
    if opts.with_driver and mode != "replay":
        backend = opts.backend or ("mujoco" if sim else "")
        if opts.emulate_hardware and not backend:
            from molmoact2_ros.backends.hardware import emulated_backend_for

            backend = emulated_backend_for(emb)
        params: dict[str, Any] = {"embodiment": emb_ref, "backend": backend, "autostart": bool(opts.autostart),
                                  "emulate_hardware": bool(opts.emulate_hardware)}
        if opts.shadow_mode:
            params["shadow_mode"] = opts.shadow_mode == "true"
        if sim:
            params["hardware_ready_timeout_s"] = SIM_HARDWARE_READY_TIMEOUT_S
        params.update(clock)
        specs.append(NodeSpec(
            name="molmoact2_driver", executable="driver_node", module="molmoact2_ros.nodes.driver_node",
            parameters=params, env=dict(env), lifecycle=True, params_files=params_files,
        ))
    return specs


def command_line(spec: NodeSpec, params_path: str | Path | None = None, python: str = sys.executable) -> list[str]:
    """The command the pip runner starts for ``spec`` (what ``ros2 run`` / launch would run, through this
    interpreter and the module so that no console script needs to be on PATH): its node name and
    ``params_path`` (the description's parameters), then the user's params files, as ``--ros-args``."""
    # sys.exit(main()): a main that returns its exit status must not end as 0.
    cmd = [python, "-u", "-c", f"import sys; from {spec.module} import main; sys.exit(main())", *spec.arguments]
    if not spec.ros_node:
        return cmd
    cmd += ["--ros-args", "-r", f"__node:={spec.name}"]
    if params_path is not None:
        cmd += ["--params-file", str(params_path)]
    for extra in spec.params_files:
        cmd += ["--params-file", extra]
    return cmd


def params_file_content(specs: list[NodeSpec]) -> dict[str, Any]:
    """A ROS 2 parameters file (YAML mapping) holding every ROS node's parameters, keyed by node name."""
    return {spec.name: {"ros__parameters": dict(spec.parameters)} for spec in specs if spec.ros_node}
