"""ros2 launch molmoact2_ros bringup.launch.py embodiment:=so101 [backend:=feetech emulate_hardware:=true sim:=true]

A thin adapter over molmoact2_ros.bringup.describe(): the pip path (`molmoact2-ros bringup`) reads the
same description, so both start the same nodes with the same parameters.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from molmoact2_ros.bringup import PACKAGE, BringupOptions, describe

ARGS = {
    "embodiment": ("so101", "built-in embodiment name or path to an embodiment YAML"),
    "backend": ("", "hardware backend; '' = the embodiment's"),
    "emulate_hardware": ("false", "true: the real arm family's backend against its emulated device (no robot)"),
    "camera_source": ("", "camera source for every camera; '' = per camera from the embodiment"),
    "checkpoint": ("", "checkpoint dir, Hugging Face id, or 'tiny'; '' = the embodiment's default"),
    "device": ("cpu", "torch device for the policy node (cuda on a GPU host)"),
    "dtype": ("fp32", "fp32 or bf16"),
    "instruction": ("", "initial task in words"),
    "shadow_mode": ("", "'' = embodiment default (on for real hardware), 'true' or 'false'"),
    "torch_num_threads": ("0", "torch CPU threads in the policy node; 0 = torch's default"),
    "with_perception": ("true", "start the perception node"),
    "with_policy": ("true", "start the policy node (false on a robot PC whose policy runs elsewhere)"),
    "with_driver": ("true", "start the driver node (false on a GPU host)"),
    "sim": ("false", "true: simulated station; the sim node (MuJoCo physics, rendered cameras) replaces perception "
            "and the arm, the driver commands it through the mujoco backend"),
    "gym_config": ("", "with sim:=true, a gymnasium env mapping (config/gym/<name>.yaml) instead of the "
                   "embodiment's scene"),
    "dds_profile": ("local_large_data", "Fast DDS profile from config/dds ('' = none); ignored when the "
                    "environment already sets FASTDDS_DEFAULT_PROFILES_FILE or FASTDDS_BUILTIN_TRANSPORTS"),
}


def _nodes(context):
    v = {k: LaunchConfiguration(k).perform(context) for k in ARGS}
    opts = BringupOptions(
        embodiment=v["embodiment"], backend=v["backend"], emulate_hardware=v["emulate_hardware"] == "true",
        camera_source=v["camera_source"],
        checkpoint=v["checkpoint"], device=v["device"], dtype=v["dtype"], instruction=v["instruction"],
        shadow_mode=v["shadow_mode"], torch_num_threads=int(v["torch_num_threads"]),
        with_perception=v["with_perception"] == "true", with_policy=v["with_policy"] == "true",
        with_driver=v["with_driver"] == "true",
        dds_profile=v["dds_profile"], sim=v["sim"] == "true", gym_config=v["gym_config"],
    )
    return [
        Node(package=PACKAGE, executable=spec.executable, name=spec.name, parameters=[spec.parameters],
             additional_env=spec.env, output="screen", emulate_tty=True)
        for spec in describe(opts)
    ]


def generate_launch_description():
    return LaunchDescription([
        *[DeclareLaunchArgument(k, default_value=d, description=desc) for k, (d, desc) in ARGS.items()],
        # Local by default: DDS discovery stays on this host unless the caller already chose otherwise.
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                               EnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", default_value="LOCALHOST")),
        OpaqueFunction(function=_nodes),
    ])
