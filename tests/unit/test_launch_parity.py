"""The launch file and `molmoact2-ros bringup` start the same executables with the same parameters, per mode.

`launch` and `launch_ros` have no PyPI wheels, so they cannot be imported here: the launch file is imported
with small stand-in modules for them (classes that record what they were built with), and its own
translation (``entities_for`` -> LifecycleNode / Node / ExecuteProcess) is compared with what the CLI runner
starts (``command_line`` + the parameters file ``ProcessGroup`` writes). On a ROS host with the real
packages the same launch file runs under ``ros2 launch``; that run is not tested here.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from molmoact2_ros.bringup import (
    BringupOptions,
    command_line,
    effective_parameters,
    launch_argument_defaults,
    params_file_content,
)
from molmoact2_ros.cli import bringup_options, build_parser
from molmoact2_ros.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "bringup.launch.py"


class _Recorded:
    """Stands in for a launch class: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stub_modules() -> dict[str, types.ModuleType]:
    mods = {n: types.ModuleType(n) for n in ("launch", "launch.actions", "launch.substitutions", "launch_ros",
                                               "launch_ros.actions", "launch_ros.substitutions")}
    classes = {"launch": ["LaunchDescription"],
               "launch.actions": ["DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction",
                                  "SetEnvironmentVariable", "Shutdown"],
               "launch.substitutions": ["EnvironmentVariable", "LaunchConfiguration"],
               "launch_ros.actions": ["LifecycleNode", "Node"],
               "launch_ros.substitutions": ["ExecutableInPackage"]}
    for mod, names in classes.items():
        for name in names:
            setattr(mods[mod], name, type(name, (_Recorded,), {}))
    return mods


@pytest.fixture
def launch_file(monkeypatch):
    for name, mod in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("bringup_launch_under_test", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _console_scripts() -> dict[str, str]:
    """setup.py's console scripts: executable -> module (what `ros2 run molmoact2_ros <executable>` runs)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    entries = next(n for n in ast.walk(tree) if isinstance(n, ast.Dict)
                   and any(isinstance(k, ast.Constant) and k.value == "console_scripts" for k in n.keys))
    scripts = ast.literal_eval(entries.values[0])
    return {line.split("=")[0].strip(): line.split("=")[1].strip().split(":")[0] for line in scripts}


def _merge(layers: list) -> dict:
    """What a node named ``name`` ends up with from launch's ``parameters=[dict, file, ...]``."""
    out: dict = {}
    for layer in layers:
        out.update(layer)
    return out


def _file_params(path: str, node: str) -> dict:
    data = yaml.safe_load(Path(path).read_text())
    out: dict = {}
    for key, body in data.items():  # rcl: wildcard entries and the node's own, in file order
        if key.lstrip("/") in (node, "**") or key == f"/**/{node}":
            out.update(body["ros__parameters"])
    return out


def _launch_view(entities) -> list[tuple]:
    view = []
    for e in entities:
        kind = type(e).__name__
        if kind == "ExecuteProcess":
            exe, *args = e.kwargs["cmd"]
            assert exe.kwargs["package"] == "molmoact2_ros"
            view.append((kind, e.kwargs["name"], exe.kwargs["executable"], tuple(args), {}, e.kwargs["additional_env"]))
            continue
        assert e.kwargs["package"] == "molmoact2_ros" and type(e.kwargs["on_exit"]).__name__ == "Shutdown"
        dict_layer, *files = e.kwargs["parameters"]
        params = _merge([dict_layer, *(_file_params(f, e.kwargs["name"]) for f in files)])
        view.append((kind, e.kwargs["name"], e.kwargs["executable"], (), params, e.kwargs["additional_env"]))
    return view


def _cli_view(argv: list[str], tmp_path: Path) -> list[tuple]:
    specs = __import__("molmoact2_ros.bringup", fromlist=["describe"]).describe(
        bringup_options(build_parser().parse_args(["bringup", *argv])))
    generated = tmp_path / "params.yaml"
    generated.write_text(yaml.safe_dump(params_file_content(specs)))  # what ProcessGroup.start writes
    scripts = _console_scripts()
    view = []
    for spec in specs:
        cmd = command_line(spec, generated)
        module = cmd[3].split("from ")[1].split(" import")[0]
        executable = next(exe for exe, mod in scripts.items() if mod == module)
        if not spec.ros_node:
            assert "--ros-args" not in cmd
            view.append(("ExecuteProcess", spec.name, executable, tuple(cmd[4:]), {}, spec.env))
            continue
        ros = cmd[cmd.index("--ros-args") + 1:]
        assert ros[:2] == ["-r", f"__node:={spec.name}"]
        files = [ros[i + 1] for i, a in enumerate(ros) if a == "--params-file"]
        params = _merge([_file_params(f, spec.name) for f in files])
        assert params == effective_parameters(spec)
        kind = "LifecycleNode" if spec.lifecycle else "Node"
        view.append((kind, spec.name, executable, (), params, spec.env))
    return view


@pytest.fixture
def user_params(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"diagnostics_period_s": 2.0}},
        "molmoact2_policy": {"ros__parameters": {"instruction": "stack the blocks", "torch_num_threads": 2}},
        "molmoact2_driver": {"ros__parameters": {"hardware_error_limit": 2}},
    }))
    return f


def _cases(tmp_path: Path, params: Path) -> dict[str, tuple[dict, list[str]]]:
    bag = tmp_path / "bag"
    bag.mkdir()
    return {  # mode: (launch arguments, CLI flags) saying the same thing
        "real": ({"embodiment": "so101"}, ["-e", "so101"]),
        "real-emulated-params": (
            {"embodiment": "so100", "emulate_hardware": "true", "shadow_mode": "false", "params_file": str(params),
             "checkpoint": "tiny", "torch_num_threads": "1"},
            ["-e", "so100", "--emulate-hardware", "--shadow-mode", "false", "--params-file", str(params),
             "--checkpoint", "tiny", "--torch-num-threads", "1"]),
        "real-robot-pc": ({"embodiment": "yam_bimanual", "with_policy": "false", "backend": "mock",
                           "autostart": "false"},
                          ["-e", "yam_bimanual", "--no-policy", "--backend", "mock", "--no-autostart"]),
        "real-gpu-host": ({"embodiment": "franka_droid", "with_perception": "false", "with_driver": "false",
                           "device": "cuda", "dtype": "bf16", "use_sim_time": "true"},
                          ["-e", "franka_droid", "--no-perception", "--no-driver", "--device", "cuda",
                           "--dtype", "bf16", "--use-sim-time"]),
        "sim": ({"mode": "sim", "embodiment": "so101", "camera_fps": "5", "params_file": str(params)},
                ["--mode", "sim", "-e", "so101", "--camera-fps", "5", "--params-file", str(params)]),
        "sim-legacy-flag": ({"sim": "true", "embodiment": "so100"}, ["--sim", "-e", "so100"]),
        "replay": ({"mode": "replay", "bag": str(bag), "replay_rate": "2", "replay_loop": "true",
                    "params_file": str(params), "dds_profile": ""},
                   ["--mode", "replay", "--bag", str(bag), "--replay-rate", "2", "--replay-loop",
                    "--params-file", str(params), "--dds-profile", ""]),
    }


CASES = ["real", "real-emulated-params", "real-robot-pc", "real-gpu-host", "sim", "sim-legacy-flag", "replay"]


@pytest.mark.parametrize("case", CASES)
def test_launch_and_cli_start_the_same_executables_with_the_same_parameters(case, launch_file, tmp_path,
                                                                          user_params):
    values, argv = _cases(tmp_path, user_params)[case]
    launch_view = _launch_view(launch_file.entities_for(values))
    cli_view = _cli_view(argv, tmp_path)
    assert launch_view == cli_view
    assert launch_view, "a station with no nodes"
    names = [v[1] for v in launch_view]
    if case.startswith("real") and case != "real-gpu-host":
        assert "molmoact2_driver" in names and "molmoact2_sim" not in names
    if case.startswith("sim"):
        assert names == ["molmoact2_sim", "molmoact2_policy", "molmoact2_driver"]
        assert dict((v[1], v[4]) for v in launch_view)["molmoact2_driver"]["backend"] == "mujoco"
    if case == "replay":
        assert [v[0] for v in launch_view] == ["ExecuteProcess", "LifecycleNode"]
        player = launch_view[0]
        assert player[2] == "molmoact2-ros" and player[3][:2] == ("replay", str(tmp_path / "bag"))
        assert "--loop" in player[3] and player[4] == {}
        assert launch_view[1][4]["use_sim_time"] is True
    if "params_file" in values:  # the user's file reaches the nodes it names, after the built-in values
        by_name = {v[1]: v[4] for v in launch_view if v[0] != "ExecuteProcess"}
        assert by_name["molmoact2_policy"]["instruction"] == "stack the blocks"
        assert by_name["molmoact2_policy"]["torch_num_threads"] == 2
        assert all(p["diagnostics_period_s"] == 2.0 for p in by_name.values())
    if case == "real-robot-pc":
        assert all(v[4]["autostart"] is False for v in launch_view if v[0] == "LifecycleNode")


def test_lifecycle_nodes_are_started_as_lifecycle_nodes(launch_file):
    kinds = {e.kwargs["name"]: type(e).__name__ for e in launch_file.entities_for({"mode": "sim"})}
    assert kinds == {"molmoact2_sim": "Node", "molmoact2_policy": "LifecycleNode",
                     "molmoact2_driver": "LifecycleNode"}
    kinds = {e.kwargs["name"]: type(e).__name__ for e in launch_file.entities_for({})}
    assert kinds["molmoact2_perception"] == "LifecycleNode"


def test_every_option_is_a_launch_argument_and_a_cli_flag(launch_file):
    ld = launch_file.generate_launch_description()
    declared = {a.args[0]: a.kwargs["default_value"] for a in ld.args[0]
                if type(a).__name__ == "DeclareLaunchArgument"}
    assert declared == launch_argument_defaults()
    assert set(declared) == {f.name for f in dataclasses.fields(BringupOptions)}
    # The CLI with no flags is the launch file with no arguments.
    assert bringup_options(build_parser().parse_args(["bringup"])) == BringupOptions()


@pytest.mark.parametrize(("values", "message"), [
    ({"mode": "replay"}, "mode replay needs a bag"),
    ({"mode": "walk"}, "unknown mode 'walk'"),
    ({"with_driver": "yes"}, r"with_driver:='yes': use true or false"),
    ({"replay_rate": "fast"}, "replay_rate:='fast': expected a number"),
    ({"mode": "replay", "bag": "/nonexistent/bag"}, "bag /nonexistent/bag not found"),
    ({"params_file": "/nonexistent.yaml"}, "params file /nonexistent.yaml not found"),
    ({"robot": "x"}, "unknown bringup argument"),
])
def test_bad_launch_arguments_are_one_line_errors(values, message, launch_file):
    with pytest.raises(ConfigError, match=message):
        launch_file.entities_for(values)


@pytest.mark.parametrize("content", ["- a\n- b\n", "molmoact2_driver:\n  backend: mock\n", "x: [\n"])
def test_malformed_params_file_is_refused_before_anything_starts(content, tmp_path, launch_file):
    f = tmp_path / "p.yaml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=r"params file .*p\.yaml"):
        launch_file.entities_for({"params_file": str(f)})
