"""``molmoact2-ros export-dataset``: recorded station bags -> a LeRobot 0.6.1 dataset for fine-tuning.

What a dataset frame is. Frames are on a grid at the embodiment's ``control_rate_hz`` (the dataset's fps,
which LeRobot wants as an integer), from the first instant every stream has a message to the last instant
every stream still has one. At frame time *t*, every stream contributes its newest message whose header
stamp is at or before *t* (what the station knew at *t*; never a later one):

- ``observation.state``: ``/joint_states`` (measured), in the embodiment's joint order;
- ``action``: what the driver commanded (``/molmoact2_driver/commanded``, stamped with the same tick as
  the measurement it published with it), i.e. what the arm was told to do at that tick;
- ``observation.images.<camera>``: each camera of the embodiment, in the model's camera order, at the
  config's width x height (resized if recorded otherwise), as AV1 videos (LeRobot's default encoder,
  through PyAV's bundled FFmpeg) or, with ``videos=False``, as PNG image features;
- ``task``: the instruction (``/molmoact2/instruction``) in force at the frame's bag log time. The
  instruction is latched, so the recorder usually receives it just after the first joint states: frames
  before the first instruction message take that first instruction. ``task=`` overrides it.

Units. State and action are stored in the MODEL space by default (``EmbodimentConfig.robot_to_model``:
LeRobot degrees and a 0..100 gripper for SO-100/101, DROID's conventions for Franka), the space of the
datasets MolmoAct2 was trained on, so a fine-tuning run reads them without conversion. ``units="robot"``
stores the recorded radians/metres instead. ``meta/molmoact2_ros.json`` records which, with the
embodiment and its per-joint sign/scale/offset.

Episodes. One bag is one episode, split where the instruction changes (consecutive frames with the same
task stay one episode).

Bad input, and what is kept. Every bag is read and checked completely before anything is written: a bag
that cannot be opened or ends early (truncated, corrupt), a missing topic, a topic of the wrong message
type, joint states without the embodiment's joints (another arm's bag), or a header clock that goes
backwards or stops for longer than ``max_gap_s`` fails the export with one line naming the bag and the
topic, and NO dataset is written (``skip_bad_bags`` leaves such bags out instead and exports the rest).
The dataset is written into ``<out>.partial-<pid>`` and renamed to ``<out>`` only once LeRobot has
finalized it; a failure while writing (disk full, a frame that does not decode) removes the partial
directory. So ``<out>`` is either a complete, loadable dataset or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from molmoact2_ros.bags.bagfile import open_bag, recorded_embodiment, resolve_bag
from molmoact2_ros.bags.topics import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    INSTRUCTION_TOPIC,
    JOINT_STATE_TYPE,
    JOINT_STATES_TOPIC,
    STRING_TYPE,
    BagError,
    camera_topic,
    commanded_topic,
    compressed_topic,
    shadow_commanded_topic,
)
from molmoact2_ros.cli_checks import check_writable
from molmoact2_ros.core.embodiment import EmbodimentConfig, list_embodiments, load_embodiment
from molmoact2_ros.core.errors import ConfigError, MolmoAct2RosError

Units = Literal["model", "robot"]
NS_PER_S = 1_000_000_000
DEFAULT_MAX_GAP_S = 1.0
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_KEY_PREFIX = "observation.images."
PROVENANCE_FILE = "meta/molmoact2_ros.json"


def image_key(camera: str) -> str:
    return IMAGE_KEY_PREFIX + camera


@dataclass
class ExportOptions:
    """What ``export-dataset`` does; the CLI fills it from its flags."""

    bags: list[str]
    out: str
    embodiment: str = ""  # '' = the one recorded in the bags' metadata
    repo_id: str = ""  # '' = local/<out dir name>
    task: str = ""  # '' = from the instruction topic
    action_topic: str = ""  # '' = the driver's commanded topic
    units: Units = "model"
    videos: bool = True
    max_gap_s: float = DEFAULT_MAX_GAP_S
    skip_bad_bags: bool = False
    progress: bool = True


@dataclass
class Episode:
    """One episode planned from a bag: frame times, state/action rows and, per camera, which of the
    camera topic's messages (by ordinal, in recorded order) each frame shows."""

    task: str
    times_ns: np.ndarray  # (n,) frame times, header-stamp clock
    state: np.ndarray  # (n, dof) in the dataset's units
    action: np.ndarray  # (n, dof)
    image_ordinals: dict[str, np.ndarray]  # camera -> (n,) message ordinal on that camera's topic

    @property
    def frames(self) -> int:
        return int(self.times_ns.shape[0])


@dataclass
class BagPlan:
    """A bag that passed every check, and the episodes it becomes."""

    path: Path
    camera_topics: dict[str, str]  # camera -> topic read (raw Image, else its /compressed sibling)
    episodes: list[Episode]
    resized: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> recorded (w, h) if not config's

    @property
    def frames(self) -> int:
        return sum(e.frames for e in self.episodes)


@dataclass
class ExportResult:
    out: Path
    repo_id: str
    fps: int
    episodes: int
    frames: int
    tasks: list[str]
    skipped: list[str]  # one line per bad bag left out (skip_bad_bags)


# What to do with a bag that cannot be read.
HINT = "re-record it, or leave it out (--skip-bad-bags)"


def bad_bag_hint(opts: ExportOptions) -> str:
    """The advice for a bad bag: with --skip-bad-bags already given, not that flag again."""
    return "re-record it" if opts.skip_bad_bags else HINT

# ---- reading a bag -------------------------------------------------------------------------------------

def _embodiments_with(names: Iterable[str]) -> list[str]:
    """Built-in embodiments whose joints are all in ``names`` (to tell the user which arm recorded a bag)."""
    have = set(names)
    out = []
    for name in list_embodiments():
        try:
            if set(load_embodiment(name).joint_names) <= have:
                out.append(name)
        except ConfigError:
            continue
    return out


def check_joint_names(bag: Path, topic: str, names: Iterable[str], emb: EmbodimentConfig) -> None:
    """BagError unless a JointState naming ``names`` carries every joint of ``emb`` (another arm's bag)."""
    names = list(names)
    missing = [j for j in emb.joint_names if j not in names]
    if missing:
        others = [e for e in _embodiments_with(names) if e != emb.name]
        hint = (f"it looks like a {' or '.join(others)} bag: pass --embodiment {others[0]}" if others
                else "export it with the embodiment that recorded it (--embodiment)")
        raise BagError(f"bag {str(bag)!r}: topic {topic}: joint states lack {emb.name}'s joints {missing} (they "
                       f"name {names[:8]}); {hint}")


class _JointSeries:
    """A JointState topic collected in the embodiment's joint order, with header stamps and log times."""

    def __init__(self, bag: Path, topic: str, emb: EmbodimentConfig):
        self.bag, self.topic, self.emb = bag, topic, emb
        self.stamps: list[int] = []
        self.logs: list[int] = []
        self.rows: list[np.ndarray] = []
        self._index_for: dict[tuple[str, ...], np.ndarray] = {}

    def add(self, msg: Any, log_ns: int) -> None:
        names = tuple(msg.name)
        index = self._index_for.get(names)
        if index is None:
            check_joint_names(self.bag, self.topic, names, self.emb)
            index = np.array([names.index(j) for j in self.emb.joint_names])
            self._index_for[names] = index
        position = np.asarray(msg.position, dtype=np.float64)
        if position.shape[0] != len(names):
            raise BagError(f"bag {str(self.bag)!r}: topic {self.topic}: message {len(self.stamps)} has "
                           f"{position.shape[0]} positions for {len(names)} names; the publisher is broken")
        row = position[index]
        if not np.all(np.isfinite(row)):
            raise BagError(f"bag {str(self.bag)!r}: topic {self.topic}: message {len(self.stamps)} has a "
                           "non-finite position; the recording is corrupt")
        self.stamps.append(_stamp_ns(msg.header.stamp))
        self.logs.append(log_ns)
        self.rows.append(row)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def _check_clock(bag: Path, topic: str, stamps: np.ndarray, max_gap_s: float) -> None:
    """Header stamps must rise (equal is fine) and never pause longer than ``max_gap_s``."""
    if stamps.size == 0:
        raise BagError(f"bag {str(bag)!r}: topic {topic} has no messages; record the station while it runs")
    if stamps[0] == 0:
        raise BagError(f"bag {str(bag)!r}: topic {topic}: header stamps are zero; the publisher must stamp its "
                       "messages (capture / tick time)")
    steps = np.diff(stamps)
    back = np.flatnonzero(steps < 0)
    if back.size:
        i = int(back[0])
        raise BagError(f"bag {str(bag)!r}: topic {topic}: the header clock jumps back by {-steps[i] / NS_PER_S:.3f} s "
                       f"at message {i + 1} (clock reset or replay restarted?); cut the bag there")
    gap = np.flatnonzero(steps > max_gap_s * NS_PER_S)
    if gap.size:
        i = int(gap[0])
        raise BagError(f"bag {str(bag)!r}: topic {topic}: the header clock jumps forward by "
                       f"{steps[i] / NS_PER_S:.3f} s at message {i + 1} (more than --max-gap {max_gap_s:g} s: a clock "
                       "jump or a gap in the recording); cut the bag there or raise --max-gap")


def _connections(reader: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for conn in reader.connections:
        out.setdefault(conn.topic, conn)
    return out


def _require(path: Path, conns: dict[str, Any], topic: str, types: tuple[str, ...], hint: str) -> Any:
    conn = conns.get(topic)
    if conn is None:
        raise BagError(f"bag {str(path)!r}: topic {topic} is missing ({hint})")
    if conn.msgtype not in types:
        raise BagError(f"bag {str(path)!r}: topic {topic} has type {conn.msgtype}, expected {' or '.join(types)}; "
                       "the bag was recorded from another publisher")
    return conn


def _deserializer() -> Callable[[bytes, str], Any]:
    """rosbags' CDR bytes into rclpy messages (rclpy's own deserializer: the bytes are what DDS carried)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, JointState
    from std_msgs.msg import String

    classes = {JOINT_STATE_TYPE: JointState, STRING_TYPE: String, COMPRESSED_TYPE: CompressedImage}

    def decode(raw: bytes, msgtype: str) -> Any:
        return deserialize_message(bytes(raw), classes[msgtype])

    return decode


def plan_bag(path: str | Path, emb: EmbodimentConfig, opts: ExportOptions, fps: int,
             on_message: Callable[[int], None] | None = None) -> BagPlan:
    """Read one bag completely, check it, and plan its episodes (frames, state, action, image ordinals).

    Raises BagError naming the bag and topic for anything that would make a wrong or partial episode."""
    from molmoact2_ros.core.images import image_from_cdr

    bag = resolve_bag(path)
    reader = open_bag(bag, bad_bag_hint(opts))
    try:
        conns = _connections(reader)
        action_topic = opts.action_topic or commanded_topic()
        state_conn = _require(bag, conns, JOINT_STATES_TOPIC, (JOINT_STATE_TYPE,), "record /joint_states")
        decode = _deserializer()
        # Another arm's bag is the likeliest mistake: say so before complaining about its cameras.
        try:
            _, _, first = next(iter(reader.messages(connections=[state_conn])), (None, None, None))
            first_msg = decode(first, JOINT_STATE_TYPE) if first is not None else None
        except Exception:  # a corrupt file: reported with its topic by the full read below
            first_msg = None
        if first_msg is not None:
            check_joint_names(bag, JOINT_STATES_TOPIC, first_msg.name, emb)
        shadow = shadow_commanded_topic()
        action_hint = (f"the driver ran in shadow mode: pass --action-topic {shadow}" if shadow in conns
                       and action_topic != shadow else "record the driver's commanded topic, or name the "
                       "topic with --action-topic")
        _require(bag, conns, action_topic, (JOINT_STATE_TYPE,), action_hint)
        instr_conn = None if opts.task else _require(
            bag, conns, INSTRUCTION_TOPIC, (STRING_TYPE,), "record the instruction, or give the task with --task")
        camera_conns: dict[str, Any] = {}
        for cam in emb.camera_names:
            raw, comp = camera_topic(cam), compressed_topic(cam)
            if raw in conns:
                camera_conns[cam] = _require(bag, conns, raw, (IMAGE_TYPE,), "")
            elif comp in conns:
                camera_conns[cam] = _require(bag, conns, comp, (COMPRESSED_TYPE,), "")
            else:
                images = sorted(t for t, c in conns.items() if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE))
                raise BagError(f"bag {str(bag)!r}: topic {raw} is missing (camera {cam!r} of {emb.name}; image "
                               f"topics in the bag: {', '.join(images) or 'none'})")

        state = _JointSeries(bag, JOINT_STATES_TOPIC, emb)
        action = _JointSeries(bag, action_topic, emb)
        instructions: list[tuple[int, str]] = []
        cam_stamps: dict[str, list[int]] = {c: [] for c in camera_conns}
        cam_sizes: dict[str, tuple[int, int]] = {}
        cam_of_topic = {c.topic: cam for cam, c in camera_conns.items()}
        wanted = {JOINT_STATES_TOPIC, action_topic, *cam_of_topic}
        if instr_conn is not None:
            wanted.add(INSTRUCTION_TOPIC)
        current = ""
        try:
            for conn, log_ns, raw in reader.messages(connections=[c for c in reader.connections
                                                                   if c.topic in wanted]):
                current = conn.topic
                if on_message is not None:
                    on_message(1)
                if current in (JOINT_STATES_TOPIC, action_topic):
                    msg = decode(raw, JOINT_STATE_TYPE)
                    # One topic may serve as both (an odd but valid --action-topic /joint_states).
                    if current == JOINT_STATES_TOPIC:
                        state.add(msg, log_ns)
                    if current == action_topic:
                        action.add(msg, log_ns)
                elif current == INSTRUCTION_TOPIC:
                    text = decode(raw, STRING_TYPE).data.strip()
                    if text:  # an empty instruction clears nothing here: the task stays what it was
                        instructions.append((log_ns, text))
                else:
                    cam = cam_of_topic[current]
                    if conn.msgtype == IMAGE_TYPE:
                        img = image_from_cdr(raw, f"bag {bag.name} {current}")
                        stamp, size = img.stamp_sec * NS_PER_S + img.stamp_nanosec, img.image.shape[1::-1]
                    else:
                        msg = decode(raw, COMPRESSED_TYPE)
                        stamp, size = _stamp_ns(msg.header.stamp), None
                    cam_stamps[cam].append(stamp)
                    if size is not None and tuple(size) != _config_size(emb, cam):
                        cam_sizes.setdefault(cam, (int(size[0]), int(size[1])))
        except BagError:
            raise
        except MolmoAct2RosError as exc:
            raise BagError(f"bag {str(bag)!r}: topic {current}: {exc}") from exc
        except Exception as exc:  # rosbags / rclpy errors on a truncated or corrupt file
            raise BagError(f"bag {str(bag)!r}: topic {current or '?'}: reading failed after "
                           f"{len(state.stamps)} joint states ({type(exc).__name__}: {exc}): the bag is truncated "
                           f"or corrupt; {bad_bag_hint(opts)}") from exc
    finally:
        reader.close()

    series = {JOINT_STATES_TOPIC: np.array(state.stamps, np.int64), action_topic: np.array(action.stamps, np.int64)}
    for cam, cam_list in cam_stamps.items():
        series[camera_conns[cam].topic] = np.array(cam_list, np.int64)
    for topic, stamps in series.items():
        _check_clock(bag, topic, stamps, opts.max_gap_s)
    if instr_conn is not None and not instructions:
        raise BagError(f"bag {str(bag)!r}: topic {INSTRUCTION_TOPIC} has no non-empty instruction; give the task "
                       "with --task")

    start = max(int(s[0]) for s in series.values())
    end = min(int(s[-1]) for s in series.values())
    if end < start:
        raise BagError(f"bag {str(bag)!r}: its topics do not overlap in time (one stream ends before another "
                       "starts); topic stamps: " + ", ".join(f"{t} {s[0] / 1e9:.3f}..{s[-1] / 1e9:.3f} s"
                                                             for t, s in series.items()))
    n = (end - start) * fps // NS_PER_S + 1
    k = np.arange(n, dtype=np.int64)
    # Integer nanoseconds: frame k is exactly start + k/fps (rounded once), comparable with the header stamps.
    grid: np.ndarray = start + (k * NS_PER_S + fps // 2) // fps
    times = grid[grid <= end]

    def at_or_before(stamps: np.ndarray) -> np.ndarray:
        return np.searchsorted(stamps, times, side="right") - 1

    si = at_or_before(series[JOINT_STATES_TOPIC])
    ai = at_or_before(series[action_topic])
    state_rows, action_rows = np.stack(state.rows)[si], np.stack(action.rows)[ai]
    if opts.units == "model":
        state_rows, action_rows = emb.robot_to_model(state_rows), emb.robot_to_model(action_rows)
    ordinals = {cam: at_or_before(series[camera_conns[cam].topic]) for cam in camera_conns}

    if opts.task:
        tasks = [opts.task] * times.shape[0]
    else:
        # The instruction is a bag-log-time event: compare it with the log time of each frame's state message.
        logs = np.array([t for t, _ in instructions], np.int64)
        frame_logs = np.array(state.logs, np.int64)[si]
        which = np.maximum(np.searchsorted(logs, frame_logs, side="right") - 1, 0)
        tasks = [instructions[int(w)][1] for w in which]
    episodes: list[Episode] = []
    lo = 0
    for hi in range(1, len(tasks) + 1):
        if hi == len(tasks) or tasks[hi] != tasks[lo]:
            episodes.append(Episode(tasks[lo], times[lo:hi], state_rows[lo:hi], action_rows[lo:hi],
                                    {cam: o[lo:hi] for cam, o in ordinals.items()}))
            lo = hi
    return BagPlan(bag, {cam: c.topic for cam, c in camera_conns.items()}, episodes, cam_sizes)


def _config_size(emb: EmbodimentConfig, camera: str) -> tuple[int, int]:
    cfg = next(c for c in emb.cameras if c.name == camera)
    return cfg.width, cfg.height


def message_count(path: str | Path, emb: EmbodimentConfig) -> int:
    """How many messages ``plan_bag`` will read at most (for a progress bar; 0 if the bag cannot be opened)."""
    try:
        reader = open_bag(path, HINT)
    except BagError:
        return 0
    try:
        wanted = {JOINT_STATES_TOPIC, INSTRUCTION_TOPIC, commanded_topic(), shadow_commanded_topic()}
        wanted |= {camera_topic(c) for c in emb.camera_names} | {compressed_topic(c) for c in emb.camera_names}
        return sum(int(c.msgcount) for c in reader.connections if c.topic in wanted)
    finally:
        reader.close()


# ---- writing the dataset -------------------------------------------------------------------------------

def dataset_features(emb: EmbodimentConfig, videos: bool) -> dict[str, dict[str, Any]]:
    """LeRobot feature spec: state and action per joint (named), one RGB stream per camera."""
    names = list(emb.joint_names)
    feats: dict[str, dict[str, Any]] = {
        STATE_KEY: {"dtype": "float32", "shape": (emb.dof,), "names": names},
        ACTION_KEY: {"dtype": "float32", "shape": (emb.dof,), "names": names},
    }
    for cam in emb.cameras:
        feats[image_key(cam.name)] = {"dtype": "video" if videos else "image", "shape": (cam.height, cam.width, 3),
                                      "names": ["height", "width", "channels"]}
    return feats


def dataset_fps(emb: EmbodimentConfig) -> int:
    fps = emb.control_rate_hz
    if fps != int(fps):
        raise ConfigError(f"{emb.source_path or emb.name}: control_rate_hz {fps:g} is not a whole number; a "
                          "LeRobot dataset's fps must be an integer")
    return int(fps)


def _frames(plan: BagPlan, emb: EmbodimentConfig) -> Iterable[tuple[Episode, int, dict[str, np.ndarray]]]:
    """(episode, frame index in it, camera -> RGB image) for every planned frame, reading the bag once.

    Camera messages arrive interleaved in log order; each frame needs one message per camera, so images are
    kept only from when they are first needed until no later frame needs them."""
    from molmoact2_ros.core.images import image_from_cdr, image_from_compressed_fields, resize

    decode = _deserializer()
    sizes = {cam: _config_size(emb, cam) for cam in plan.camera_topics}
    need: dict[str, set[int]] = {cam: set() for cam in plan.camera_topics}
    for ep in plan.episodes:
        for cam, ords in ep.image_ordinals.items():
            need[cam].update(int(x) for x in ords)
    queue = [(ep, i) for ep in plan.episodes for i in range(ep.frames)]
    images: dict[str, dict[int, np.ndarray]] = {cam: {} for cam in plan.camera_topics}
    seen = dict.fromkeys(plan.camera_topics, -1)
    topic_cam = {t: cam for cam, t in plan.camera_topics.items()}
    reader = open_bag(plan.path, HINT)
    try:
        conns = [c for c in reader.connections if c.topic in topic_cam]
        pos = 0
        for conn, _, raw in reader.messages(connections=conns):
            cam = topic_cam[conn.topic]
            seen[cam] += 1
            if seen[cam] in need[cam]:
                what = f"bag {plan.path.name} {conn.topic}"
                if conn.msgtype == IMAGE_TYPE:
                    img = image_from_cdr(raw, what).image
                else:
                    msg = decode(raw, COMPRESSED_TYPE)
                    img = image_from_compressed_fields(msg.format, msg.data, what)
                images[cam][seen[cam]] = np.ascontiguousarray(resize(img, *sizes[cam]))
            while pos < len(queue):
                ep, i = queue[pos]
                wanted = {cam: int(ep.image_ordinals[cam][i]) for cam in images}
                if any(o not in images[cam] for cam, o in wanted.items()):
                    break
                yield ep, i, {cam: images[cam][o] for cam, o in wanted.items()}
                pos += 1
                if pos < len(queue):  # drop images no later frame shows
                    nxt_ep, j = queue[pos]
                    for c in images:
                        keep = int(nxt_ep.image_ordinals[c][j])
                        for old in [o for o in images[c] if o < keep]:
                            del images[c][old]
        if pos < len(queue):
            raise BagError(f"bag {str(plan.path)!r}: camera topics ended before frame {pos} could be built; the "
                           "bag changed while exporting?")
    finally:
        reader.close()


def _quiet_encoders() -> None:
    # SVT-AV1 prints its whole configuration per video at info level, and LeRobot probes torchcodec (which
    # needs a system FFmpeg; PyAV bundles its own) with a page-long warning: we choose PyAV explicitly.
    os.environ.setdefault("SVT_LOG", "1")
    import logging

    logging.getLogger("lerobot").setLevel(logging.ERROR)
    try:  # LeRobot's save_episode runs a datasets.map with its own progress bar: ours says it all
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass
    try:
        import av

        av.logging.set_level(av.logging.ERROR)
    except ImportError:
        pass


def _import_lerobot_dataset() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local root only: never reach for the Hub
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as exc:
        raise ConfigError(f"export-dataset needs LeRobot's dataset extra ({exc}); install it with "
                          "pip install 'lerobot[dataset]==0.6.1'") from None
    return LeRobotDataset


def _provenance(emb: EmbodimentConfig, opts: ExportOptions, plans: list[BagPlan]) -> dict[str, Any]:
    return {
        "embodiment": emb.name,
        "units": opts.units,
        "robot_to_model": {"formula": "model = sign * model_scale * robot + offset",
                           "joints": [{"name": j.name, "unit": j.unit, "sign": j.sign, "model_scale": j.model_scale,
                                       "offset": j.offset} for j in emb.joints]},
        "state_topic": JOINT_STATES_TOPIC,
        "action_topic": opts.action_topic or commanded_topic(),
        "cameras": emb.camera_names,
        "bags": [{"path": str(p.path), "camera_topics": p.camera_topics, "frames": p.frames,
                  "episodes": len(p.episodes), "resized_from": p.resized} for p in plans],
    }


def export_dataset(opts: ExportOptions) -> ExportResult:
    """Plan every bag (checks included), then write the dataset; see the module docstring."""
    from tqdm import tqdm

    if not opts.bags:
        raise BagError("no bags given; pass one or more rosbag2 directories")
    if opts.units not in ("model", "robot"):
        raise ConfigError(f"units {opts.units!r} is not allowed: model or robot")
    if not opts.max_gap_s > 0:
        raise ConfigError(f"--max-gap {opts.max_gap_s!r} must be a positive number of seconds")
    out = Path(opts.out)
    if out.exists():
        raise ConfigError(f"output {str(out)!r} already exists; choose a new --out (the export never overwrites)")
    check_writable(out, "--out", what="dataset directory")  # before reading any bag, not after
    name = opts.embodiment or recorded_embodiment(opts.bags[0])
    if not name:
        raise ConfigError(f"bag {opts.bags[0]!r} does not say which embodiment recorded it; pass --embodiment")
    emb = load_embodiment(name)
    fps = dataset_fps(emb)

    plans: list[BagPlan] = []
    skipped: list[str] = []
    total = sum(message_count(b, emb) for b in opts.bags)
    with tqdm(total=total, desc="reading bags", unit="msg", disable=not opts.progress, leave=False) as bar:
        for bag in opts.bags:
            try:
                if not opts.embodiment:
                    other = recorded_embodiment(bag)
                    if other and other != name:
                        raise BagError(f"bag {bag!r} was recorded with embodiment {other}, the first bag with "
                                       f"{name}; export them separately or pass --embodiment")
                plans.append(plan_bag(bag, emb, opts, fps, on_message=bar.update))
            except BagError as exc:
                if not opts.skip_bad_bags:
                    raise
                skipped.append(str(exc))
    if not plans:
        raise BagError("no usable bag: " + " | ".join(skipped))

    lerobot_dataset = _import_lerobot_dataset()
    _quiet_encoders()
    repo_id = opts.repo_id or f"local/{out.name}"
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    total_frames = sum(p.frames for p in plans)
    ds = None
    try:
        ds = lerobot_dataset.create(
            repo_id, fps=fps, features=dataset_features(emb, opts.videos), root=partial, robot_type=emb.name,
            # Not LeRobot's streaming encoder: when its encoder thread falls 30 frames behind (a busy machine),
            # it drops frames after 0.1 s with only a warning, and every later video frame shows the wrong
            # step. Frames go to PNG (4 writer threads) and are encoded whole at each save_episode: nothing lost.
            use_videos=opts.videos, video_backend="pyav", streaming_encoding=False, image_writer_threads=4)
        with tqdm(total=total_frames, desc="writing dataset", unit="frame", disable=not opts.progress) as bar:
            for plan in plans:
                current: Episode | None = None
                for ep, i, images in _frames(plan, emb):
                    if current is not None and ep is not current:
                        ds.save_episode()
                    current = ep
                    frame = {STATE_KEY: ep.state[i].astype(np.float32), ACTION_KEY: ep.action[i].astype(np.float32),
                             "task": ep.task}
                    frame.update({image_key(cam): img for cam, img in images.items()})
                    ds.add_frame(frame)
                    bar.update(1)
                if current is not None:
                    ds.save_episode()
        ds.finalize()
        (partial / PROVENANCE_FILE).write_text(json.dumps(_provenance(emb, opts, plans), indent=1))
        partial.rename(out)
    except BaseException as exc:
        if ds is not None:
            try:
                ds.clear_episode_buffer()
                ds.finalize()
            except Exception:  # already failing: the partial directory goes anyway
                pass
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, MolmoAct2RosError) or not isinstance(exc, Exception):
            raise
        raise BagError(f"writing the dataset failed ({type(exc).__name__}: {exc}); nothing was kept at "
                       f"{str(out)!r}") from exc
    tasks = list(dict.fromkeys(e.task for p in plans for e in p.episodes))
    return ExportResult(out, repo_id, fps, sum(len(p.episodes) for p in plans), total_frames, tasks, skipped)


def format_result(res: ExportResult) -> str:
    lines = [f"wrote {res.episodes} episode(s), {res.frames} frames at {res.fps} fps to {res.out} "
             f"(repo_id {res.repo_id}); tasks: {'; '.join(res.tasks)}"]
    lines += [f"skipped: {s}" for s in res.skipped]
    return "\n".join(lines)


def run_export_cli(opts: ExportOptions) -> int:
    """The CLI's body: 0 when every bag was exported, 1 when bad bags were skipped; errors raise (exit 2)."""
    res = export_dataset(opts)
    print(format_result(res), flush=True)
    return 1 if res.skipped else 0
