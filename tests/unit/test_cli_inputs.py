"""Bad command-line input is refused up front: exit 2, one line naming the option (or path), no traceback,
and nothing started (no node process, no model load, no bag read, no output left behind)."""

from __future__ import annotations

from pathlib import Path

import pytest

from molmoact2_ros import cli
from molmoact2_ros.cli import main
from molmoact2_ros.core.embodiment import load_embodiment


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any command gets past its checks: node processes, recording, replay, a model load,
    scene rendering or a checkpoint build."""
    import molmoact2_ros.backends.policy.tiny_checkpoint as tiny
    import molmoact2_ros.bags.eval_cli as eval_cli
    import molmoact2_ros.bags.record as record
    import molmoact2_ros.demo as demo
    import molmoact2_ros.process_runner as runner
    import molmoact2_ros.sim.cli as sim_cli

    started: list[str] = []

    def refuse(name):
        def fake(*_a, **_k):
            started.append(name)
            raise AssertionError(f"{name} ran although the input was bad")
        return fake

    monkeypatch.setattr(demo, "run_demo", refuse("run_demo"))
    monkeypatch.setattr(runner.ProcessGroup, "start", refuse("ProcessGroup.start"))
    monkeypatch.setattr(record, "run_record_cli", refuse("run_record_cli"))
    monkeypatch.setattr(eval_cli, "_policy_factory", refuse("model load"))
    monkeypatch.setattr(sim_cli, "write_strip", refuse("write_strip"))
    monkeypatch.setattr(tiny, "build_tiny_checkpoint", refuse("build_tiny_checkpoint"))
    return started


def _refused(capsys, argv: list[str], *words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, code, err)
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("molmoact2-ros: error: "), err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "afile"
    f.write_text("not a directory")
    return f


# ---- option values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["demo", "--duration", "0"], ["--duration", "> 0"]),
    (["demo", "--duration", "-5"], ["--duration", "-5"]),
    (["demo", "--duration", "nan"], ["--duration"]),
    (["demo", "--hardware", "mock", "--camera-fps", "-3"], ["--camera-fps -3"]),
    (["demo", "--hardware", "mock", "--camera-fps", "2000"], ["--camera-fps 2000", "1000"]),
    (["demo", "--camera-fps", "500"], ["--camera-fps", "240"]),  # the sim node's own limit
    (["demo", "--max-inference-rate", "-1"], ["--max-inference-rate -1", ">= 0"]),
    (["record", "-o", "bag_never_written", "--duration", "-1"], ["--duration must be >= 0"]),
    (["record", "-o", "bag_never_written", "--split-size-mb", "-2"], ["--split-size-mb"]),
])
def test_bad_values_are_refused_before_anything_starts(argv, words, capsys, no_work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(capsys, argv, *words)
    assert no_work == [] and not (tmp_path / "bag_never_written").exists()


def test_good_demo_values_pass_the_checks(capsys, no_work):
    with pytest.raises(AssertionError, match="run_demo ran"):
        main(["demo", "--duration", "1", "--camera-fps", "10", "--max-inference-rate", "2"])
    assert no_work == ["run_demo"]


def test_replay_refuses_a_non_positive_max_gap(capsys, tmp_path):
    from molmoact2_ros.bags.replay import BagReplay, ReplayOptions
    from molmoact2_ros.core.errors import MolmoAct2RosError

    # Checked before the bag is even looked at (this one does not exist).
    with pytest.raises(MolmoAct2RosError, match="--max-gap must be > 0"):
        BagReplay(ReplayOptions(bag=str(tmp_path / "nope"), max_gap_s=-1.0))


# ---- unwritable outputs ----------------------------------------------------------------------------------
def test_unwritable_outputs_are_one_line_before_any_work(capsys, no_work, a_file, tmp_path):
    under_file = str(a_file / "x")
    cases = [
        (["demo", "--hardware", "mock", "--log-dir", under_file], "--log-dir"),
        (["bringup", "--no-policy", "--no-perception", "--log-dir", under_file], "--log-dir"),
        (["eval", str(tmp_path), "--checkpoint", "tiny", "-o", under_file], "--output"),
        (["sim-frames", "-e", "so101", "--out", under_file + ".png"], "--out"),
        (["sim-frames", "--all", "--out", str(a_file)], "--out"),
        (["make-tiny-checkpoint", under_file], "OUT"),
        (["make-tiny-checkpoint", "/proc/molmoact2_nope"], "OUT"),
    ]
    for argv, option in cases:
        err = _refused(capsys, argv, option)
        assert "/proc" in err or str(a_file) in err, err
    assert no_work == []
    assert a_file.read_text() == "not a directory"


def test_check_writable_creates_nothing(tmp_path):
    from molmoact2_ros.cli_checks import check_writable

    target = tmp_path / "a" / "b" / "c"
    assert check_writable(target, "--out") == target
    assert list(tmp_path.iterdir()) == []  # the probe is gone, and no folder was made on the way


def test_process_group_start_on_an_unwritable_log_dir_is_a_config_error(a_file):
    from molmoact2_ros.bringup import NodeSpec
    from molmoact2_ros.core.errors import ConfigError
    from molmoact2_ros.process_runner import ProcessGroup

    group = ProcessGroup([NodeSpec(name="n", executable="n", module="n")], {}, a_file / "logs")
    with pytest.raises(ConfigError, match="choose a writable --log-dir"):
        group.start()
    assert group.nodes == []


# ---- eval: bags checked before the model -----------------------------------------------------------------
def test_eval_with_no_usable_bag_stops_before_the_model_and_writes_no_report(capsys, no_work, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "x.mcap").write_bytes(b"garbage" * 50)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report"
    err = _refused(capsys, ["eval", str(empty), "--checkpoint", "tiny", "-o", str(out)],
                   "not a rosbag2 directory (no metadata.yaml)", "pass the .mcap file itself")
    assert "FileNotFoundError" not in err
    _refused(capsys, ["eval", str(garbage / "x.mcap"), str(empty), "-o", str(out)], "no usable bag", "x.mcap")
    assert no_work == [] and not out.exists()


def test_eval_speed_keeps_two_significant_digits():
    from molmoact2_ros.bags.eval_cli import format_speed

    assert format_speed(0.0576).startswith("0.058x") and format_speed(2.324).startswith("2.3x")


# ---- check-config ----------------------------------------------------------------------------------------
def _so101_with(tmp_path: Path, name: str, edit) -> Path:
    import yaml

    data = yaml.safe_load(Path(load_embodiment("so101").source_path).read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_checks_every_file_one_line_each(capsys, tmp_path):
    dup = _so101_with(tmp_path, "dup.yaml", lambda d: d["cameras"].append(dict(d["cameras"][0])))
    watchdog = _so101_with(tmp_path, "wd.yaml", lambda d: d["safety"].update(watchdog_stop_timeout_s=0.01))
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["check-config", str(dup), "so101", str(folder), str(watchdog)]) == 2
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1 and captured.out.startswith("so101: OK (so101: 6 joints")
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3, errors
    assert errors[0] == (f"molmoact2-ros: error: {dup}: <top level>: camera names must be unique; "
                         "got ['front', 'wrist', 'front']")
    assert errors[1].endswith(f"{folder}: is a directory; pass an embodiment YAML file (or a built-in name)")
    assert errors[2] == (f"molmoact2-ros: error: {watchdog}: safety: watchdog_stop_timeout_s must be >= "
                         "watchdog_hold_timeout_s")
    assert main(["check-config", "so101", "so100"]) == 0


def test_a_field_error_still_shows_its_value(tmp_path):
    from molmoact2_ros.core.errors import ConfigError

    path = _so101_with(tmp_path, "rate.yaml", lambda d: d.update(control_rate_hz=-3))
    with pytest.raises(ConfigError, match=r"control_rate_hz: value -3 is not allowed"):
        load_embodiment(path)


# ---- messages --------------------------------------------------------------------------------------------
def test_a_directory_without_metadata_is_named_as_such(tmp_path):
    from molmoact2_ros.bags.bagfile import resolve_bag
    from molmoact2_ros.bags.topics import BagError

    (tmp_path / "run_0.mcap").write_bytes(b"x")
    with pytest.raises(BagError, match=r"not a rosbag2 directory \(no metadata.yaml\) \(it holds run_0.mcap\)"):
        resolve_bag(tmp_path)
    assert resolve_bag(tmp_path / "run_0.mcap") == tmp_path / "run_0.mcap"  # the file itself is passed on


def test_skip_bad_bags_does_not_advise_the_flag_already_given(tmp_path):
    pytest.importorskip("rosbags")
    from molmoact2_ros.bags.export import ExportOptions, plan_bag
    from molmoact2_ros.bags.topics import BagError

    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"garbage" * 50)
    emb = load_embodiment("so101")
    for skip, advised in ((False, True), (True, False)):
        with pytest.raises(BagError) as info:
            plan_bag(bad, emb, ExportOptions(bags=[str(bad)], out="x", skip_bad_bags=skip), 30)
        assert ("--skip-bad-bags" in str(info.value)) == advised, str(info.value)


def test_record_summary_counts_the_topics_that_had_messages():
    from molmoact2_ros.bags.record import BagSummary, format_summary

    text = format_summary(BagSummary(Path("b"), {"/a": 3, "/b": 0, "/c": 1}, ["b_0.mcap"], 0, 10**9, 2000))
    assert "4 messages on 2 of 3 topics" in text and "/b" not in text


# ---- help ------------------------------------------------------------------------------------------------
def test_help_shows_no_empty_choice_and_every_option_is_explained(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("demo", "bringup", "eval", "check-config", "make-tiny-checkpoint", "sim-frames", "replay",
                 "export-dataset", "record"):
        page = sub.choices[name]
        text = page.format_help()
        assert "{," not in text and ",}" not in text, (name, text)
        unexplained = [a.dest for a in page._actions if not a.help and a.dest != "help"]
        assert unexplained == [], (name, unexplained)


def test_max_gap_style_options_state_default_and_meaning(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, option in (("replay", "--max-gap"), ("export-dataset", "--max-gap"), ("eval", "--max-clock-jump")):
        action = next(a for a in sub.choices[name]._actions if option in a.option_strings)
        assert action.help.startswith("clock-gap limit, seconds > 0") and "(default: " in action.help, action.help
