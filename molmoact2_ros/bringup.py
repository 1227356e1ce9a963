"""One description of which nodes run with which parameters.

Both ``launch/bringup.launch.py`` (ROS 2 installs) and ``molmoact2-ros bringup`` / ``demo`` (pip-only
installs, no ``launch`` package) read :func:`describe`, so the two cannot drift apart. No rclpy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from molmoact2_ros.core.embodiment import load_embodiment

PACKAGE = "molmoact2_ros"


@dataclass(frozen=True)
class NodeSpec:
    """A node to start: ``executable`` is the console script; ``module`` runs it without one."""

    name: str
    executable: str
    module: str
    parameters: dict[str, Any] = field(default_factory=dict)
    needs_torch: bool = False


@dataclass(frozen=True)
class BringupOptions:
    embodiment: str = "so101"
    backend: str = ""  # '' = the embodiment's hardware.backend
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


def describe(opts: BringupOptions) -> list[NodeSpec]:
    """The node list for one embodiment station. Validates the embodiment file first."""
    emb = load_embodiment(opts.embodiment)
    # Nodes get the resolved path so a custom YAML works identically in every process.
    emb_ref = emb.source_path or opts.embodiment
    specs: list[NodeSpec] = []
    if opts.with_perception:
        specs.append(NodeSpec(
            name="molmoact2_perception", executable="perception_node",
            module="molmoact2_ros.nodes.perception_node",
            parameters={"embodiment": emb_ref, "source": opts.camera_source, "fps": float(opts.camera_fps)},
        ))
    if opts.with_policy:
        specs.append(NodeSpec(
            name="molmoact2_policy", executable="policy_node", module="molmoact2_ros.nodes.policy_node",
            parameters={
                "embodiment": emb_ref, "checkpoint": opts.checkpoint, "device": opts.device,
                "dtype": opts.dtype, "instruction": opts.instruction,
                "max_inference_rate_hz": float(opts.max_inference_rate_hz), "autostart": True,
                "torch_num_threads": int(opts.torch_num_threads),
            },
            needs_torch=True,
        ))
    if opts.with_driver:
        params: dict[str, Any] = {"embodiment": emb_ref, "backend": opts.backend, "autostart": True}
        if opts.shadow_mode:
            params["shadow_mode"] = opts.shadow_mode == "true"
        specs.append(NodeSpec(
            name="molmoact2_driver", executable="driver_node", module="molmoact2_ros.nodes.driver_node",
            parameters=params,
        ))
    return specs


def params_file_content(specs: list[NodeSpec]) -> dict[str, Any]:
    """A ROS 2 parameters file (YAML mapping) holding every node's parameters, keyed by node name."""
    return {spec.name: {"ros__parameters": dict(spec.parameters)} for spec in specs}
