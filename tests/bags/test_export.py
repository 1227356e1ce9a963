"""``molmoact2-ros export-dataset``: station bags -> a LeRobot 0.6.1 dataset, loaded back with LeRobot.

The bags are real rosbag2 MCAP files (``rosbags`` writer) holding rclpy messages serialized by rclpy and
built with the project's own encoders (``core.images.fill_image``, ``nodes.contract.chunk_to_msg``). Their
content is known by construction, so the test states what each dataset frame must hold without re-running
the exporter's alignment: the driver ticks at 30 Hz (``/joint_states`` and ``commanded`` share the tick's
stamp), the front camera captures 20 ms after every tick, the wrist camera 20 ms after every second tick,
and the instruction changes 5 ms before tick 40. The first frame is at tick 0 + 20 ms (the first instant
every stream has a message), so frame k shows tick k's state and command, front image k and wrist image
k // 2, and the episode boundary is at frame 40.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("rosbags")
pytest.importorskip("lerobot")
pytest.importorskip("av")
pytest.importorskip("datasets")

from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from molmoact2_ros.bags.export import ExportOptions, export_dataset
from molmoact2_ros.bags.topics import BAG_EMBODIMENT_KEY, BagError
from molmoact2_ros.core.chunk import ActionChunk
from molmoact2_ros.core.embodiment import EmbodimentConfig, load_embodiment, resolve_embodiment_path
from molmoact2_ros.core.images import fill_image
from molmoact2_ros.nodes.contract import chunk_to_msg

pytestmark = pytest.mark.ros

NS = 1_000_000_000
T0_NS = 1_700_000_000 * NS + 123_456_789  # an epoch-like start: stamps are exact integers in the bag
RATE = 30
CAM_DELAY_NS = 20_000_000  # later than half a tick: "nearest" would pick the next tick, "at or before" this one
SWITCH_TICK = 40
TASKS = ("pick up the red cube", "put it in the bowl")
W, H = 64, 48


def tick_ns(i: int) -> int:
    return T0_NS + round(i * NS / RATE)


def small_embodiment(tmp_path: Path, name: str = "so101") -> tuple[Path, EmbodimentConfig]:
    """A built-in embodiment with its cameras shrunk to 64x48 (the test is about alignment, not pixels)."""
    data = yaml.safe_load(resolve_embodiment_path(name).read_text())
    for cam in data["cameras"]:
        cam.update(width=W, height=H)
    path = tmp_path / f"{name}_small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_embodiment(path)


def colour(camera: int, i: int) -> np.ndarray:
    """Image ``i`` of a camera: a flat colour of its own (far from every other frame's) and a dark corner
    that tells the orientation."""
    rgb = np.array([(i * 53 + camera * 17) % 180 + 40, (i * 97 + camera * 71) % 180 + 40, (i * 31) % 180 + 40])
    img = np.empty((H, W, 3), np.uint8)
    img[:] = rgb
    img[: H // 4, : W // 4] = 10
    return img


def robot_q(emb: EmbodimentConfig, i: int, phase: float = 0.0) -> np.ndarray:
    t = i / RATE
    span = emb.upper - emb.lower
    return emb.home + 0.2 * span * np.sin(2 * math.pi * 0.4 * t + np.arange(emb.dof) + phase)


def joint_state(names: list[str], stamp_ns: int, q: np.ndarray) -> JointState:
    msg = JointState(name=names, position=[float(x) for x in q])
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, NS)
    return msg


def image(stamp_ns: int, frame: np.ndarray, camera: str) -> Image:
    msg = fill_image(Image(), frame)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, NS)
    msg.header.frame_id = f"{camera}_optical_frame"
    return msg


def write_bag(path: Path, emb: EmbodimentConfig, embodiment_ref: str, *, ticks: int = 75,
              skip_topics: tuple[str, ...] = (), joint_names: list[str] | None = None,
              tamper: Callable[[str, int, int, Any], tuple[int, Any] | None] | None = None,
              extra: tuple[tuple[int, str, str, Any], ...] = (), storage: str = "mcap") -> Path:
    """A station bag (MCAP) as the recorder writes one. ``tamper(topic, i, stamp_ns, msg)`` may replace a
    message's (stamp, msg), or drop it by returning None; ``extra`` adds (log ns, topic, type, msg) events:
    both make bad bags."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    names = joint_names or emb.joint_names
    cams = emb.camera_names
    events: list[tuple[int, str, str, Any]] = []  # (log ns, topic, type, msg)

    def add(topic: str, msgtype: str, log_ns: int, i: int, stamp_ns: int, make: Callable[[int], Any]) -> None:
        if topic in skip_topics:
            return
        msg = make(stamp_ns)
        if tamper is not None:
            changed = tamper(topic, i, stamp_ns, msg)
            if changed is None:
                return
            stamp_ns, msg = changed
        events.append((log_ns, topic, msgtype, msg))

    js = "sensor_msgs/msg/JointState"
    for i in range(ticks):
        t = tick_ns(i)
        q, c = robot_q(emb, i), robot_q(emb, i, phase=0.3)
        add("/joint_states", js, t + 1_000_000, i, t, lambda s, q=q: joint_state(names, s, q))
        add("/molmoact2_driver/commanded", js, t + 1_000_000, i, t, lambda s, c=c: joint_state(names, s, c))
        for k, cam in enumerate(cams):
            if k == 0 or i % 2 == 0:  # first camera every tick, the others every second tick
                img = colour(k, i if k == 0 else i // 2)
                add(f"/cameras/{cam}/image_raw", "sensor_msgs/msg/Image", t + CAM_DELAY_NS + 3_000_000, i,
                    t + CAM_DELAY_NS, lambda s, img=img, cam=cam: image(s, img, cam))
        if i % 10 == 0:  # chunks: in every real bag, not used by the export
            steps = np.stack([robot_q(emb, i + k) for k in range(4)])
            chunk = ActionChunk(joint_names=emb.joint_names, positions=steps, stamp_s=t / NS, rate_hz=RATE)
            add("/molmoact2/action_chunk", "trajectory_msgs/msg/JointTrajectory", t + 20_000_000, i, t,
                lambda s, chunk=chunk: chunk_to_msg(chunk))
    # The latched instruction reaches the recorder just after the first joint state; the change 5 ms before tick 40.
    add("/molmoact2/instruction", "std_msgs/msg/String", T0_NS + 2_000_000, 0, 0, lambda s: String(data=TASKS[0]))
    add("/molmoact2/instruction", "std_msgs/msg/String", tick_ns(SWITCH_TICK) - 5_000_000, 1, 0,
        lambda s: String(data=TASKS[1]))
    events += extra
    events.sort(key=lambda e: e[0])

    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.open()
    writer.set_custom_data(BAG_EMBODIMENT_KEY, embodiment_ref)
    conns: dict[str, Any] = {}
    for log_ns, topic, msgtype, msg in events:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
        raw = msg if isinstance(msg, bytes) else serialize_message(msg)
        writer.write(conns[topic], log_ns, raw)
    writer.close()
    return path


def opts(bags: list[Path], out: Path, **kw: Any) -> ExportOptions:
    return ExportOptions(bags=[str(b) for b in bags], out=str(out), progress=False, **kw)


def load(out: Path, repo_id: str) -> Any:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=out, video_backend="pyav")


# ---- the dataset matches the bag ---------------------------------------------------------------------------

def test_export_loads_back_with_frames_actions_and_episodes_of_the_bag(tmp_path: Path) -> None:
    yaml_path, emb = small_embodiment(tmp_path)
    bag = write_bag(tmp_path / "run1", emb, str(yaml_path))
    out = tmp_path / "dataset"
    res = export_dataset(opts([bag], out))  # embodiment from the bag's metadata
    assert (res.episodes, res.frames, res.fps) == (2, 74, 30)
    assert res.tasks == list(TASKS)
    assert not any(p.name.startswith("dataset.partial") for p in tmp_path.iterdir())

    ds = load(out, res.repo_id)
    assert ds.meta.fps == RATE and ds.meta.total_episodes == 2 and len(ds) == 74
    assert ds.meta.robot_type == "so101"
    assert ds.meta.video_keys == ["observation.images.front", "observation.images.wrist"]
    eps = ds.meta.episodes
    assert list(eps["dataset_from_index"]) == [0, SWITCH_TICK]
    assert list(eps["dataset_to_index"]) == [SWITCH_TICK, 74]
    assert [list(t) for t in eps["tasks"]] == [[TASKS[0]], [TASKS[1]]]
    assert ds.meta.features["observation.state"]["names"] == emb.joint_names

    front = [colour(0, i).astype(np.float32) for i in range(75)]
    wrist = [colour(1, i).astype(np.float32) for i in range(38)]
    for k in range(74):
        item = ds[k]
        ep = 0 if k < SWITCH_TICK else 1
        assert int(item["episode_index"]) == ep and item["task"] == TASKS[ep]
        assert int(item["frame_index"]) == (k if ep == 0 else k - SWITCH_TICK)
        # State and action in the model space (LeRobot degrees, 0..100 gripper for SO-101), tick k.
        np.testing.assert_allclose(item["observation.state"].numpy(), emb.robot_to_model(robot_q(emb, k)),
                                   rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(item["action"].numpy(), emb.robot_to_model(robot_q(emb, k, phase=0.3)),
                                   rtol=1e-6, atol=1e-4)
        for key, frames, want in (("front", front, k), ("wrist", wrist, k // 2)):
            got = item[f"observation.images.{key}"].numpy().transpose(1, 2, 0) * 255.0  # CHW float -> HWC
            err = np.array([np.abs(got - f).mean() for f in frames])
            assert int(err.argmin()) == want, f"frame {k} {key}: shows bag image {err.argmin()}, want {want}"
            assert err[want] < 6.0, f"frame {k} {key}: video differs from the bag image by {err[want]:.1f} levels"
    # SO-101 shoulder_lift: model = -deg(q) + 90 (sign -1, offset 90), so the units are the model's own.
    lift = emb.joint_names.index("shoulder_lift")
    assert float(ds[5]["observation.state"][lift]) == pytest.approx(90.0 - math.degrees(robot_q(emb, 5)[lift]),
                                                                     abs=1e-3)


def test_robot_units_images_and_task_override(tmp_path: Path) -> None:
    yaml_path, emb = small_embodiment(tmp_path)
    bag = write_bag(tmp_path / "run", emb, "", ticks=20, skip_topics=("/molmoact2/instruction",), storage="sqlite3")
    out = tmp_path / "ds_robot"
    res = export_dataset(opts([bag], out, embodiment=str(yaml_path), units="robot", videos=False,
                              task="wipe the table", repo_id="lab/wipe"))
    assert (res.episodes, res.frames) == (1, 19)
    ds = load(out, "lab/wipe")
    assert ds.meta.video_keys == [] and ds.meta.image_keys == ["observation.images.front", "observation.images.wrist"]
    item = ds[7]
    assert item["task"] == "wipe the table"
    np.testing.assert_allclose(item["observation.state"].numpy(), robot_q(emb, 7), rtol=1e-6, atol=1e-6)
    got = item["observation.images.front"].numpy().transpose(1, 2, 0) * 255.0
    np.testing.assert_allclose(got, colour(0, 7), atol=1.0)  # PNG: lossless
    prov = (out / "meta" / "molmoact2_ros.json").read_text()
    assert '"units": "robot"' in prov


def test_video_export_never_feeds_the_frame_dropping_streaming_encoder(tmp_path: Path, monkeypatch) -> None:
    """LeRobot's StreamingVideoEncoder drops a frame (warning only) when its queue stays full for 0.1 s: on a
    busy machine a video then shows every later step shifted (seen under load in the frame check above)."""
    from lerobot.datasets import video_utils

    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the export fed LeRobot's streaming encoder, which drops frames under load")

    monkeypatch.setattr(video_utils.StreamingVideoEncoder, "feed_frame", refuse)
    yaml_path, emb = small_embodiment(tmp_path)
    bag = write_bag(tmp_path / "run", emb, str(yaml_path), ticks=20)
    res = export_dataset(opts([bag], tmp_path / "ds"))
    assert res.frames == 19 and load(tmp_path / "ds", res.repo_id).meta.video_keys


# ---- bad input: one line naming the bag and the topic; nothing half-written ------------------------------

@pytest.fixture
def station(tmp_path: Path) -> tuple[Path, EmbodimentConfig]:
    return small_embodiment(tmp_path)


def _fails(tmp_path: Path, bag: Path, yaml_path: Path, *needles: str, **kw: Any) -> str:
    out = tmp_path / "out"
    with pytest.raises(BagError) as info:
        export_dataset(opts([bag], out, embodiment=str(yaml_path), **kw))
    text = str(info.value)
    assert "\n" not in text
    for needle in (str(bag), *needles):
        assert needle in text, f"{needle!r} not in {text!r}"
    assert not out.exists() and not list(tmp_path.glob("out.partial*"))
    return text


def test_truncated_bag(tmp_path: Path, station: tuple[Path, EmbodimentConfig]) -> None:
    yaml_path, emb = station
    bag = write_bag(tmp_path / "cut", emb, "", ticks=20)
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    _fails(tmp_path, bag, yaml_path, "truncated or corrupt")


def test_corrupt_message_names_its_topic(tmp_path: Path, station: tuple[Path, EmbodimentConfig]) -> None:
    yaml_path, emb = station

    def garble(topic: str, i: int, stamp: int, msg: Any) -> tuple[int, Any]:
        return (stamp, b"\x00\x01\x00\x00\xff\xff\xff\x7f") if (topic == "/joint_states" and i == 5) else (stamp, msg)

    bag = write_bag(tmp_path / "garbled", emb, "", ticks=20, tamper=garble)
    _fails(tmp_path, bag, yaml_path, "topic /joint_states", "corrupt")


def test_missing_topic(tmp_path: Path, station: tuple[Path, EmbodimentConfig]) -> None:
    yaml_path, emb = station
    bag = write_bag(tmp_path / "nocmd", emb, "", ticks=10, skip_topics=("/molmoact2_driver/commanded",))
    _fails(tmp_path, bag, yaml_path, "topic /molmoact2_driver/commanded is missing", "--action-topic")
    bag = write_bag(tmp_path / "nowrist", emb, "", ticks=10, skip_topics=("/cameras/wrist/image_raw",))
    _fails(tmp_path, bag, yaml_path, "topic /cameras/wrist/image_raw is missing")


def test_wrong_message_type(tmp_path: Path, station: tuple[Path, EmbodimentConfig]) -> None:
    yaml_path, emb = station
    instruction_as_joints = (T0_NS, "/molmoact2/instruction", "sensor_msgs/msg/JointState",
                             joint_state(emb.joint_names, T0_NS, emb.home))
    wrong = write_bag(tmp_path / "wrongtype", emb, "", ticks=10, skip_topics=("/molmoact2/instruction",),
                      extra=(instruction_as_joints,))
    _fails(tmp_path, wrong, yaml_path, "topic /molmoact2/instruction has type sensor_msgs/msg/JointState",
           "std_msgs/msg/String")


def test_another_embodiments_joints(tmp_path: Path, station: tuple[Path, EmbodimentConfig]) -> None:
    yaml_path, _ = station
    _, yam = small_embodiment(tmp_path, "yam_bimanual")
    bag = write_bag(tmp_path / "yam", yam, "", ticks=10)
    _fails(tmp_path, bag, yaml_path, "topic /joint_states", "lack so101's joints", "--embodiment yam_bimanual")


def test_clock_jumps(tmp_path: Path, station: tuple[Path, EmbodimentConfig]) -> None:
    yaml_path, emb = station

    def back(topic: str, i: int, stamp: int, msg: Any) -> tuple[int, Any]:
        if topic == "/cameras/front/image_raw" and i >= 12:
            stamp -= 3 * NS  # the front camera's clock was reset
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, NS)
        return stamp, msg

    bag = write_bag(tmp_path / "back", emb, "", ticks=20, tamper=back)
    _fails(tmp_path, bag, yaml_path, "topic /cameras/front/image_raw", "jumps back by 2.967")

    def pause(topic: str, i: int, stamp: int, msg: Any) -> tuple[int, Any] | None:
        return None if topic == "/joint_states" and 5 <= i < 60 else (stamp, msg)

    bag = write_bag(tmp_path / "gap", emb, "", ticks=70, tamper=pause)
    _fails(tmp_path, bag, yaml_path, "topic /joint_states", "jumps forward by 1.8", "--max-gap")


def test_one_bad_bag_fails_the_export_cleanly_or_is_skipped(tmp_path: Path, station: tuple[Path, EmbodimentConfig],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from molmoact2_ros.cli import main

    yaml_path, emb = station
    good = write_bag(tmp_path / "good", emb, "", ticks=15)
    bad = write_bag(tmp_path / "bad", emb, "", ticks=15, skip_topics=("/joint_states",))
    out = tmp_path / "both"
    good_file = next(good.glob("*.mcap"))  # a bag's file works as well as its directory
    assert main(["export-dataset", str(good_file), str(bad), "--out", str(out), "-e", str(yaml_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"bag '{bad}': topic /joint_states is missing" in err, err
    assert not out.exists() and not list(tmp_path.glob("both.partial*"))

    from molmoact2_ros.bags.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["export-dataset", str(good), str(bad), "--out", str(out), "-e", str(yaml_path),
                              "--skip-bad-bags", "--quiet"])
    assert args.func(args) == 1  # exported, but not everything
    ds = load(out, f"local/{out.name}")
    assert ds.meta.total_episodes == 1 and len(ds) == 14
