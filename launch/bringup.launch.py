"""ros2 launch molmoact2_ros bringup.launch.py embodiment:=so101 [mode:=real|sim|replay] [params_file:=my.yaml] ...

A thin adapter over molmoact2_ros.bringup.describe(): `molmoact2-ros bringup` reads the same description
(same arguments, same parameters, same params file), so both start the same executables with the same
parameters (tests/unit/test_launch_parity.py checks it for every mode). Every BringupOptions field is a
launch argument (`--show-args` lists them). Lifecycle nodes start as LifecycleNode and configure + activate
themselves when autostart:=true (the default); with autostart:=false they wait for a lifecycle manager.
Any node exiting shuts the whole launch down, as `molmoact2-ros bringup` stops the station.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import ExecutableInPackage

from molmoact2_ros.bringup import (
    LAUNCH_ARGUMENT_HELP,
    PACKAGE,
    NodeSpec,
    describe,
    launch_argument_defaults,
    options_from_strings,
)


def launch_entity(spec: NodeSpec):
    """The launch action starting ``spec``: a LifecycleNode, a Node, or (the bag player) a plain process."""
    on_exit = Shutdown(reason=f"{spec.name} exited")
    if not spec.ros_node:
        return ExecuteProcess(cmd=[ExecutableInPackage(executable=spec.executable, package=PACKAGE),
                                   *spec.arguments],
                              name=spec.name, additional_env=spec.env, output="screen", on_exit=on_exit)
    # The description's parameters first, then the user's params files: a later entry wins, as with the
    # CLI's --params-file order.
    kwargs = dict(package=PACKAGE, executable=spec.executable, name=spec.name,
                  parameters=[spec.parameters, *spec.params_files], additional_env=spec.env,
                  output="screen", emulate_tty=True, on_exit=on_exit)
    if spec.lifecycle:
        return LifecycleNode(namespace="", **kwargs)
    return Node(**kwargs)


def entities_for(values: dict[str, str]) -> list:
    """The launch actions for these launch argument values (strings, as launch holds them)."""
    return [launch_entity(spec) for spec in describe(options_from_strings(values))]


def _nodes(context):
    return entities_for({k: LaunchConfiguration(k).perform(context) for k in launch_argument_defaults()})


def generate_launch_description():
    defaults = launch_argument_defaults()
    return LaunchDescription([
        *[DeclareLaunchArgument(k, default_value=d, description=LAUNCH_ARGUMENT_HELP[k])
          for k, d in defaults.items()],
        # Local by default: DDS discovery stays on this host unless the caller already chose otherwise.
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                               EnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", default_value="LOCALHOST")),
        OpaqueFunction(function=_nodes),
    ])
