"""Parameter overrides a node does not declare fail its start-up instead of being silently ignored.

rclpy keeps an override (params file, ``-p``) for a name the node never declares and does nothing with it:
a lab that mistypes ``safety.chunk_max_age_s`` would believe its tighter limit is in force. Every node of
this package calls :func:`check_parameter_overrides` once it has declared its parameters (before it
configures anything), so such an override ends start-up with one line naming the parameter, the node and
the closest declared names.

Only overrides addressed to this node count: a node-specific key of a params file (``molmoact2_driver:``,
``/molmoact2_driver``, ``/**/molmoact2_driver``) or ``-p [node:]name:=value``. rclpy merges those with the
``/**`` (or ``/*``) ones, meant for every node of a process or a launch, into ``Node._parameter_overrides``;
this module tells them apart by reading the process's ``--ros-args`` itself (rclpy keeps no copy of them).
A wildcard parameter that no node of ours declares is the bringup's to refuse (:func:`unknown_wildcard`),
which knows every node's names from :data:`NODE_PARAMETERS` without starting any.

No rclpy import: ``molmoact2_ros.bringup`` (which must not need rclpy) checks params files with this too.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from molmoact2_ros.core.embodiment import SafetyConfig
from molmoact2_ros.core.errors import ConfigError

# rclpy declares these on every node.
RCLPY_PARAMETERS = ("use_sim_time", "start_type_description_service")

# What each node of the package declares, for checks made without starting it (the bringup's, before any
# process starts). tests/node/test_param_check.py instantiates every node and compares its declared names
# with these, so a parameter added to a node without being added here fails that test.
NODE_PARAMETERS: dict[str, frozenset[str]] = {
    "molmoact2_driver": frozenset({
        *RCLPY_PARAMETERS, "embodiment", "backend", "emulate_hardware", "autostart", "shadow_mode",
        "diagnostics_period_s", "hardware_error_limit", "control_thread_priority", "period_error_window_ticks",
        "chunk_decode", "hardware_ready_timeout_s",
        # driver_node.TIGHTEN_ONLY_SAFETY, by the same rule (importing the node module would import rclpy).
        *(f"safety.{name}" for name, f in SafetyConfig.model_fields.items() if f.annotation is float),
    }),
    "molmoact2_policy": frozenset({
        *RCLPY_PARAMETERS, "embodiment", "checkpoint", "norm_tag", "device", "dtype", "num_flow_steps",
        "n_action_steps", "enable_cuda_graph", "action_mode", "fast_tokenizer_dir", "enable_depth_reasoning",
        "enable_depth_cache", "depth_cache_max_gap_s", "instruction", "image_transport", "camera_thread_priority",
        "camera_max_age_s", "camera_max_skew_s", "frozen_frame_limit", "joint_state_max_age_s", "input_grace_s",
        "max_inference_rate_hz", "diagnostics_period_s", "autostart", "seed", "torch_num_threads",
    }),
    "molmoact2_perception": frozenset({
        *RCLPY_PARAMETERS, "embodiment", "cameras", "source", "devices", "fps", "width", "height",
        "publish_compressed", "jpeg_quality", "autostart", "opencv_fourcc", "loop", "realsense_depth",
        "bag_topic", "bag_restamp", "read_timeout_s", "reopen_after_s", "freeze_timeout_s",
        "camera_thread_priority", "preflight", "preflight_timeout_s", "diagnostics_period_s",
    }),
    "molmoact2_sim": frozenset({
        *RCLPY_PARAMETERS, "embodiment", "gym_config", "seed", "command_topic", "state_topic", "real_time_factor",
        "camera_fps", "publish_cameras", "preflight_timeout_s", "state_rate_hz",
    }),
}

# The process's arguments as rclpy.init got them (spin_node records them); None: sys.argv, rclpy's default.
_process_args: list[str] | None = None


def use_process_arguments(args: Sequence[str] | None) -> None:
    """Record the arguments ``rclpy.init`` is given (None: ``sys.argv``, as rclpy reads then)."""
    global _process_args
    _process_args = None if args is None else list(args)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{safety: {chunk_max_age_s: 0.8}}`` -> ``{'safety.chunk_max_age_s': 0.8}``, as rcl reads a params file."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the declared names most like ``name``; '' when none is close."""
    matches = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    if not matches:
        return ""
    # Only the names about as close as the best: a shared prefix (safety., molmoact2_) makes many look close.
    ratio = [difflib.SequenceMatcher(None, name, m).ratio() for m in matches]
    matches = [m for m, r in zip(matches, ratio, strict=True) if r >= ratio[0] - 0.05]
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)"


def not_declared_message(names: Sequence[str], node: str, declared: Iterable[str]) -> str:
    """One line: ``parameter 'x' is not a parameter of <node> (did you mean 'y'?)`` (several: each with its
    suggestions)."""
    declared = list(declared)
    if len(names) == 1:
        return f"parameter {names[0]!r} is not a parameter of {node}{closest(names[0], declared)}"
    listed = ", ".join(f"{n!r}{closest(n, declared)}" for n in names)
    return f"parameters {listed} are not parameters of {node}"


def is_wildcard_key(key: str) -> bool:
    """Whether a params-file key (or a ``-p`` node prefix) names nodes by a wildcard (``/**``, ``/*``)."""
    return "*" in key.rstrip("/").rsplit("/", 1)[-1]


def key_matches(key: str, fqn: str) -> bool:
    """Whether a params-file node key applies to the node ``fqn`` (``/ns/name``), by rcl's rules: ``*`` is
    one name token, ``**`` any number of them; a key without a leading ``/`` is in the root namespace."""
    pattern = ""
    for token in key.strip("/").split("/"):
        pattern += {"**": r"(?:/[^/]+)*", "*": r"/[^/]+"}.get(token, "/" + re.escape(token))
    return re.fullmatch(pattern, fqn) is not None


def _ros_arguments(argv: Sequence[str]) -> list[str]:
    """The tokens rcl reads as ROS arguments: after each ``--ros-args`` up to ``--`` (or the end)."""
    out: list[str] = []
    inside = False
    for token in argv:
        if token == "--ros-args":
            inside = True
        elif token == "--" and inside:
            inside = False
        elif inside:
            out.append(token)
    return out


def _params_file_entries(path: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(node key, flattened parameters)]`` of a params file rcl has already accepted; namespaces may
    nest (``ns: {node: {ros__parameters: ...}}``)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return []  # rcl read it; if we cannot, we only lose the wildcard attribution (stricter, never laxer)
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(prefix: str, body: Any) -> None:
        if not isinstance(body, Mapping):
            return
        if isinstance(body.get("ros__parameters"), Mapping):
            out.append((prefix, flatten(body["ros__parameters"])))
            return
        for key, sub in body.items():
            walk(f"{prefix}/{str(key).strip('/')}", sub)

    if isinstance(data, Mapping):
        for key, body in data.items():
            walk("/" + str(key).strip("/"), body)
    return out


def wildcard_only(argv: Sequence[str], fqn: str) -> set[str]:
    """Names the arguments ``argv`` give node ``fqn`` only through a wildcard key (``/**``, ``/*``), never
    by its name or a ``-p`` rule: meant for all nodes, so not an error for one that does not declare them."""
    wild: set[str] = set()
    specific: set[str] = set()
    ros = _ros_arguments(argv)
    for i, token in enumerate(ros[:-1]):
        value = ros[i + 1]
        if token == "--params-file":
            for key, params in _params_file_entries(value):
                if key_matches(key, fqn):
                    (wild if is_wildcard_key(key) else specific).update(params)
        elif token in ("-p", "--param") and ":=" in value:
            rule = value.split(":=", 1)[0]
            node, _, name = rule.rpartition(":")
            if not node:  # -p name:=value: this process's node (one per process in this package)
                specific.add(name)
            elif key_matches(node, fqn):
                (wild if is_wildcard_key(node) else specific).add(name)
    return wild - specific


def check_parameter_overrides(node: Any) -> None:
    """Raise :class:`ConfigError` when an override addressed to ``node`` names a parameter it has not
    declared. Call it after the node's last ``declare_parameter`` and before it acts on any of them."""
    declared = set(node._parameters)
    undeclared = set(node._parameter_overrides) - declared
    if not undeclared:
        return
    argv = sys.argv if _process_args is None else _process_args
    undeclared -= wildcard_only(argv, node.get_fully_qualified_name())
    if undeclared:
        raise ConfigError(not_declared_message(sorted(undeclared), node.get_name(), declared))
