"""The bringup description is what both the launch file and the pip runner start."""

import ast
import dataclasses
from pathlib import Path

import pytest

from molmoact2_ros.bringup import BringupOptions, describe, params_file_content
from molmoact2_ros.core.errors import ConfigError

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "bringup.launch.py"


@pytest.mark.parametrize("emb", ["so101", "so100", "yam_bimanual", "franka_droid"])
def test_three_nodes_with_resolved_embodiment(emb):
    specs = describe(BringupOptions(embodiment=emb, checkpoint="tiny"))
    assert [s.executable for s in specs] == ["perception_node", "policy_node", "driver_node"]
    for spec in specs:
        assert Path(spec.parameters["embodiment"]).name == f"{emb}.yaml"
    assert [s.needs_torch for s in specs] == [False, True, False]
    params = params_file_content(specs)
    assert params["molmoact2_policy"]["ros__parameters"]["checkpoint"] == "tiny"


def test_robot_pc_role_has_no_torch_node():
    specs = describe(BringupOptions(with_policy=False))
    assert not any(s.needs_torch for s in specs)


def test_bad_embodiment_fails_before_anything_starts(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: X\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: name"):
        describe(BringupOptions(embodiment=str(bad)))


def test_launch_file_arguments_cover_bringup_options():
    tree = ast.parse(LAUNCH.read_text())
    args = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "ARGS")
    launch_args = {k.value for k in args.value.keys}
    fields = {f.name for f in dataclasses.fields(BringupOptions)}
    # Demo-only knobs are not launch arguments; everything else must be reachable from ros2 launch.
    assert fields - launch_args == {"max_inference_rate_hz", "camera_fps"}
    assert launch_args <= fields


@pytest.mark.parametrize(("emb", "family"), [("so101", "feetech"), ("so100", "feetech"),
                                             ("yam_bimanual", "i2rt"), ("franka_droid", "franka")])
def test_emulated_hardware_picks_the_embodiments_real_family(emb, family):
    driver = next(s for s in describe(BringupOptions(embodiment=emb, emulate_hardware=True))
                  if s.name == "molmoact2_driver")
    assert driver.parameters["backend"] == family and driver.parameters["emulate_hardware"] is True
    plain = next(s for s in describe(BringupOptions(embodiment=emb)) if s.name == "molmoact2_driver")
    assert plain.parameters["backend"] == "" and plain.parameters["emulate_hardware"] is False


def test_emulating_a_backend_without_an_emulated_device_is_a_clear_error():
    from molmoact2_ros.backends.hardware import make_hardware
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.core.errors import HardwareError

    with pytest.raises(HardwareError, match="no emulated device"):
        make_hardware(load_embodiment("so101"), "ros_topic", emulate=True)
