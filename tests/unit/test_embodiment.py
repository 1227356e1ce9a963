"""Embodiment configs: every built-in file validates; bad files fail with file, field, value, rule."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from molmoact2_ros.core.embodiment import list_embodiments, load_embodiment, parse_embodiment
from molmoact2_ros.core.errors import ConfigError

BUILT_IN = ["franka_droid", "so100", "so101", "yam_bimanual"]


def test_all_built_ins_listed_and_valid():
    assert list_embodiments() == BUILT_IN
    for name in BUILT_IN:
        emb = load_embodiment(name)
        assert emb.dof == len(emb.joint_names)
        assert np.all(emb.lower < emb.upper)
        assert np.all((emb.home >= emb.lower) & (emb.home <= emb.upper))
        assert emb.chunk.n_action_steps <= emb.chunk.action_horizon


@pytest.mark.parametrize(("name", "dof", "cams", "tag"), [
    ("so101", 6, ["front", "wrist"], "so100_so101_molmoact2"),
    ("so100", 6, ["front", "wrist"], "so100_so101_molmoact2"),
    ("yam_bimanual", 14, ["top", "left", "right"], "yam_dual_molmoact2"),
    ("franka_droid", 8, ["external", "wrist"], "franka_droid"),
])
def test_model_facts(name, dof, cams, tag):
    emb = load_embodiment(name)
    assert (emb.dof, emb.camera_names, emb.policy.norm_tag) == (dof, cams, tag)


def test_so101_lerobot_signs_and_offsets():
    emb = load_embodiment("so101")
    # LeRobot >= 0.5 calibration: signs [1,-1,1,1,1,1], offsets [0,90,90,0,0,0] degrees.
    model = emb.robot_to_model(np.zeros(6))
    assert model[:5].tolist() == pytest.approx([0, 90, 90, 0, 0])
    q = np.array([0.1, 0.2, -0.3, 0.4, -0.5, 0.7])
    m = emb.robot_to_model(q)
    assert m[1] == pytest.approx(90 - np.degrees(0.2))
    assert emb.model_to_robot(m) == pytest.approx(q)


def test_franka_gripper_is_droid_closed_equals_one():
    emb = load_embodiment("franka_droid")
    q = emb.home.copy()
    q[-1] = 0.08  # fully open
    assert emb.robot_to_model(q)[-1] == pytest.approx(0.0)
    q[-1] = 0.0
    assert emb.robot_to_model(q)[-1] == pytest.approx(1.0)


def test_yam_arms_group_all_joints():
    emb = load_embodiment("yam_bimanual")
    grouped = [j for arm in emb.arms.values() for j in arm]
    assert sorted(grouped) == sorted(emb.joint_names)


def _so101_data():
    return yaml.safe_load(Path(load_embodiment("so101").source_path).read_text())


@pytest.mark.parametrize(("mutate", "field", "needle"), [
    (lambda d: d["joints"][2].update(position_limits=[1.0, -1.0]), "joints[2].position_limits", "lower < upper"),
    (lambda d: d["joints"][0].update(max_velocity_per_s=-1), "joints[0].max_velocity_per_s", "greater than 0"),
    (lambda d: d.update(control_rate_hz="fast"), "control_rate_hz", "'fast'"),
    (lambda d: d["chunk"].update(n_action_steps=40), "chunk", "cannot exceed action_horizon"),
    (lambda d: d.pop("policy"), "policy", "required"),
    (lambda d: d["joints"][1].update(name="shoulder_pan"), "<top level>", "repeated"),
    (lambda d: d["cameras"][0].update(fps=0), "cameras[0].fps", "greater than 0"),
    (lambda d: d["hardware"].update(backend="serial"), "hardware.backend", "'mock'"),
    (lambda d: d["joints"][0].update(sign=2), "joints[0].sign", "1"),
    (lambda d: d["safety"].update(watchdog_stop_timeout_s=0.1), "safety", "watchdog_stop_timeout_s"),
    (lambda d: d.update(colour="red"), "colour", "Extra inputs"),
    (lambda d: d["joints"][5].update(home=3.0), "joints[5]", "outside position_limits"),
])
def test_bad_values_name_file_field_value(mutate, field, needle):
    data = _so101_data()
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_embodiment(data, "bad.yaml")
    msg = str(err.value)
    assert msg.startswith(f"bad.yaml: {field}:"), msg
    assert needle in msg, msg
    assert "\n" not in msg


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\njoints: [\n  - {name: a\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+, column \d+ is not valid YAML"):
        load_embodiment(bad)


def test_unknown_name_lists_built_ins():
    with pytest.raises(ConfigError, match="built-in ones are franka_droid, so100, so101, yam_bimanual"):
        load_embodiment("ur5")


def test_check_config_cli(tmp_path):
    good = subprocess.run([sys.executable, "-m", "molmoact2_ros.cli", "check-config", "so101", "yam_bimanual"],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "so101: OK" in good.stdout and "yam_bimanual: OK (yam_bimanual: 14 joints" in good.stdout
    data = _so101_data()
    data["joints"][0]["position_limits"] = [2.0, 1.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = subprocess.run([sys.executable, "-m", "molmoact2_ros.cli", "check-config", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert f"{bad}: joints[0].position_limits: value" in lines[0]


# ---- numbers that would disable safety, and files that are not YAML text ------------------------------

@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d["joints"][0].update(max_velocity_per_s=float("inf")), "joints[0].max_velocity_per_s"),
    (lambda d: d["joints"][0].update(max_velocity_per_s=1e308), "joints[0]"),
    (lambda d: d["joints"][0].update(max_acceleration_per_s2=float("inf")), "joints[0].max_acceleration_per_s2"),
    (lambda d: d["joints"][0].update(position_limits=[-1e308, 1e308]), "joints[0]"),
    (lambda d: d["joints"][0].update(offset=float("nan")), "joints[0].offset"),
    (lambda d: d["joints"][0].update(model_scale=float("inf")), "joints[0].model_scale"),
    (lambda d: d["safety"].update(watchdog_hold_timeout_s=float("inf")), "safety.watchdog_hold_timeout_s"),
    (lambda d: d["safety"].update(watchdog_stop_timeout_s=float("inf")), "safety.watchdog_stop_timeout_s"),
    (lambda d: d["safety"].update(chunk_max_age_s=float("inf")), "safety.chunk_max_age_s"),
    (lambda d: d["safety"].update(future_stamp_tolerance_s=float("inf")), "safety.future_stamp_tolerance_s"),
    (lambda d: d["safety"].update(max_step_jump_factor=float("inf")), "safety.max_step_jump_factor"),
    (lambda d: d["safety"].update(max_step_jump_factor=1e9), "safety.max_step_jump_factor"),
    (lambda d: d["safety"].update(startup_max_distance_rad=float("inf")), "safety.startup_max_distance_rad"),
    (lambda d: d["safety"].update(startup_max_distance_rad=7.0), "safety.startup_max_distance_rad"),
    (lambda d: d["safety"].update(entry_max_distance_m=float("nan")), "safety.entry_max_distance_m"),
    (lambda d: d["safety"].update(max_tracking_error_rad=float("inf")), "safety.max_tracking_error_rad"),
    (lambda d: d["safety"].update(tracking_error_grace_s=float("nan")), "safety.tracking_error_grace_s"),
    (lambda d: d["safety"].update(startup_ramp_speed_fraction=0.0), "safety.startup_ramp_speed_fraction"),
    (lambda d: d.update(control_rate_hz=float("inf")), "control_rate_hz"),
    (lambda d: d["cameras"][0].update(max_age_s=float("inf")), "cameras[0].max_age_s"),
    (lambda d: d["hardware"]["params"]["mock"].update(time_constant_s=float("inf")), "hardware.params"),
])
def test_numbers_that_would_disable_safety_are_refused(mutate, field):
    data = _so101_data()
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_embodiment(data, "lab.yaml")
    msg = str(err.value)
    assert msg.startswith(f"lab.yaml: {field}"), msg
    assert "\n" not in msg


def test_infinite_values_written_as_yaml_are_refused_too(tmp_path):
    text = (Path(load_embodiment("so101").source_path).read_text()
            .replace("max_velocity_per_s: 3.0,", "max_velocity_per_s: .inf,", 1))
    path = tmp_path / "inf.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"joints\[0\]\.max_velocity_per_s.*finite"):
        load_embodiment(path)


def test_renamed_safety_fields_name_their_replacement():
    data = _so101_data()
    data["safety"]["startup_max_distance"] = 0.5
    with pytest.raises(ConfigError, match="startup_max_distance was replaced by startup_max_distance_rad"):
        parse_embodiment(data, "old.yaml")
    data = _so101_data()
    data["safety"]["max_tracking_error"] = 0.3
    with pytest.raises(ConfigError, match="max_tracking_error was replaced by max_tracking_error_rad"):
        parse_embodiment(data, "old.yaml")


def test_distances_are_per_unit_with_per_joint_overrides():
    franka = load_embodiment("franka_droid")
    # The gripper is in metres: its startup distance is the metre one, not the radian one.
    assert franka.startup_max_distance[-1] == franka.safety.startup_max_distance_m
    assert franka.startup_max_distance[0] == franka.safety.startup_max_distance_rad
    assert franka.entry_max_distance[-1] == 0.08  # its own override: open or close fully
    so101 = load_embodiment("so101")
    assert so101.max_tracking_error[-1] == so101.safety.max_tracking_error_normalized
    assert np.all(so101.max_acceleration > 0)


def test_entry_distance_below_two_ticks_of_motion_is_refused():
    data = _so101_data()
    data["safety"]["entry_max_distance_rad"] = 0.1  # 2 x 3 rad/s / 30 Hz = 0.2
    with pytest.raises(ConfigError, match=r"entry_max_distance for shoulder_pan .* below two ticks"):
        parse_embodiment(data, "lab.yaml")


@pytest.mark.parametrize(("content", "needle"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
    ("name: so101\n".encode("utf-16"), "UTF-16"),
    ("# Réglages du bras\nname: arm\n".encode("latin-1"), "line 1: byte 0xe9 is not UTF-8"),
    (b"name: a\x00b\n", "NUL"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"{a: " * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
])
def test_unreadable_files_are_one_clear_line(tmp_path, content, needle):
    path = tmp_path / "arm.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_embodiment(path)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg, msg


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + Path(load_embodiment("so101").source_path).read_bytes())
    assert load_embodiment(path).name == "so101"


@pytest.mark.parametrize("command", ["check-config", "demo", "bringup"])
def test_cli_reports_a_binary_config_in_one_line(tmp_path, command):
    path = tmp_path / "arm.yaml"
    path.write_bytes(b"\xff\xd8\xff\xe0 not yaml at all \x00\x01")
    args = [str(path)] if command == "check-config" else ["--embodiment", str(path)]
    res = subprocess.run([sys.executable, "-m", "molmoact2_ros.cli", command, *args], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr and str(path) in lines[0], res.stderr
