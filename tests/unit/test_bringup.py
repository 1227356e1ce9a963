"""The bringup description is what both the launch file and the pip runner start."""

from pathlib import Path

import pytest

from molmoact2_ros.bringup import BringupOptions, describe, params_file_content
from molmoact2_ros.core.errors import ConfigError


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


def test_modes_start_the_expected_nodes(tmp_path):
    names = {mode: [s.name for s in describe(BringupOptions(mode=mode, bag=str(tmp_path) if mode == "replay" else ""))]
             for mode in ("real", "sim", "replay")}
    assert names == {"real": ["molmoact2_perception", "molmoact2_policy", "molmoact2_driver"],
                     "sim": ["molmoact2_sim", "molmoact2_policy", "molmoact2_driver"],
                     "replay": ["molmoact2_replay", "molmoact2_policy"]}
    with pytest.raises(ConfigError, match="contradicts"):
        describe(BringupOptions(mode="real", sim=True))


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


def test_params_may_only_tighten_the_embodiments_safety_limits():
    from molmoact2_ros.core.embodiment import load_embodiment
    from molmoact2_ros.nodes.driver_node import TIGHTEN_ONLY_SAFETY, tightened_embodiment

    emb = load_embodiment("so101")
    assert "chunk_max_age_s" in TIGHTEN_ONLY_SAFETY and "fault_action" not in TIGHTEN_ONLY_SAFETY
    tight = tightened_embodiment(emb, {"chunk_max_age_s": emb.safety.chunk_max_age_s / 2, "entry_max_distance_rad": 0})
    assert tight.safety.chunk_max_age_s == emb.safety.chunk_max_age_s / 2
    assert tight.safety.entry_max_distance_rad == emb.safety.entry_max_distance_rad  # 0: the embodiment's
    with pytest.raises(ConfigError, match=r"safety\.chunk_max_age_s=.* loosens so101's limit"):
        tightened_embodiment(emb, {"chunk_max_age_s": emb.safety.chunk_max_age_s * 2})
