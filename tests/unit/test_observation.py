"""core.observation: the policy node's input checks, without ROS or torch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact2_ros.core.embodiment import load_embodiment
from molmoact2_ros.core.errors import ConfigError, ObservationError
from molmoact2_ros.core.observation import (
    InputFault,
    InputLimits,
    ObservationAssembler,
    ObservationNotReady,
    bytes_fingerprint,
    frame_fingerprint,
)

EMB = load_embodiment("so101")
CAMS = EMB.camera_names
JOINTS = EMB.joint_names
T0 = 1000.0


def frame(value: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    img[h // 2, (value * 5) % w] = 255  # one bright pixel whose position encodes ``value``
    img[0, 0, 2] = value % 256
    return img


def limits(**overrides) -> InputLimits:
    fields = {"camera_max_age_s": {c: 0.5 for c in CAMS}, "max_skew_s": 0.1, "frozen_after": 3,
              "joint_state_max_age_s": 0.5}
    fields.update(overrides)
    return InputLimits(**fields)


def assembler(**overrides) -> ObservationAssembler:
    return ObservationAssembler(CAMS, JOINTS, limits(**overrides), instruction="pick up the cube")


def add(a: ObservationAssembler, cam: str, stamp: float, value: int, source: str = "", img=None) -> None:
    img = frame(value) if img is None else img
    a.add_frame(cam, stamp, lambda: img, frame_fingerprint(img), source)


def feed(a: ObservationAssembler, stamp: float = T0, value: int = 0, state=None, names=None) -> None:
    for k, cam in enumerate(CAMS):
        add(a, cam, stamp - 0.01 * k, value + 100 * k)
    a.set_joint_state(names or JOINTS, EMB.home if state is None else state, stamp)


def faults(a: ObservationAssembler, now: float = T0) -> dict[InputFault, str]:
    return {p.fault: p.subject for p in a.check(now)}


def test_complete_inputs_assemble_in_camera_order_stamped_with_the_oldest_frame():
    a = assembler()
    feed(a)
    got = a.assemble(T0 + 0.02)
    obs = got.observation
    assert list(obs.images) == CAMS
    assert obs.stamp_s == pytest.approx(T0 - 0.01)  # wrist lags by 10 ms: the observation is that old
    np.testing.assert_array_equal(obs.state, EMB.home)
    assert obs.instruction == "pick up the cube"
    assert got.frame_stamps_s == {"front": T0, "wrist": pytest.approx(T0 - 0.01)}
    assert got.sequence == a.sequence == 2
    assert a.check(T0 + 0.02) == []


def test_joint_state_is_matched_by_name_not_position():
    a = assembler()
    feed(a)
    target = EMB.home + np.arange(6) * 0.1
    order = [5, 3, 1, 0, 4, 2]
    names = ["other_arm_joint", *[JOINTS[i] for i in order]]
    a.set_joint_state(names, [42.0, *[target[i] for i in order]], T0)
    np.testing.assert_allclose(a.assemble(T0).observation.state, target)


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(6)), st.lists(st.floats(-1.0, 1.0), min_size=6, max_size=6))
def test_any_joint_order_gives_the_embodiment_order(order, values):
    a = assembler()
    feed(a)
    values = np.asarray(values)
    a.set_joint_state([JOINTS[i] for i in order], values[list(order)], T0)
    np.testing.assert_array_equal(a.assemble(T0).observation.state, values)


def test_missing_joint_is_named():
    a = assembler()
    feed(a)
    a.set_joint_state(JOINTS[:-1], EMB.home[:-1], T0)
    with pytest.raises(ObservationNotReady) as err:
        a.assemble(T0)
    assert err.value.faults == (InputFault.JOINT_MISSING,)
    assert err.value.problems[0].subject == "gripper" and "'gripper'" in str(err.value)


def test_names_longer_than_positions_count_as_missing():
    a = assembler()
    feed(a)
    a.set_joint_state(JOINTS, EMB.home[:4], T0)
    assert faults(a) == {InputFault.JOINT_MISSING: "wrist_roll,gripper"}


def test_non_finite_state_names_the_joints():
    a = assembler()
    feed(a)
    state = EMB.home.copy()
    state[1], state[4] = np.nan, np.inf
    a.set_joint_state(JOINTS, state, T0)
    with pytest.raises(ObservationNotReady) as err:
        a.assemble(T0)
    assert err.value.faults == (InputFault.STATE_NOT_FINITE,)
    assert "shoulder_lift" in str(err.value) and "wrist_roll" in str(err.value)


def test_missing_camera_and_joint_state():
    a = assembler()
    add(a, "front", T0, 1)
    assert faults(a) == {InputFault.CAMERA_MISSING: "wrist", InputFault.JOINT_STATE_MISSING: ""}
    assert "'wrist'" in str(ObservationNotReady(a.check(T0)))


def test_stale_camera_then_recovery():
    a = assembler()
    feed(a)
    add(a, "front", T0 + 0.6, 7)
    a.set_joint_state(JOINTS, EMB.home, T0 + 0.6)
    found = a.check(T0 + 0.6)
    assert {p.fault for p in found} == {InputFault.CAMERA_STALE, InputFault.CAMERA_SKEW}
    stale = next(p for p in found if p.fault is InputFault.CAMERA_STALE)
    assert stale.subject == "wrist" and "0.61 s old" in stale.message and "max_age_s 0.5" in stale.message
    add(a, "wrist", T0 + 0.6, 8)  # the camera comes back
    assert a.check(T0 + 0.6) == []
    a.assemble(T0 + 0.6)


def test_per_camera_max_age():
    a = assembler(camera_max_age_s={"front": 0.5, "wrist": 2.0}, max_skew_s=0)
    feed(a, stamp=T0)
    a.set_joint_state(JOINTS, EMB.home, T0 + 1.0)
    assert faults(a, T0 + 1.0) == {InputFault.CAMERA_STALE: "front"}


def test_skew_between_cameras():
    a = assembler()
    add(a, "front", T0, 1)
    add(a, "wrist", T0 - 0.3, 2)
    a.set_joint_state(JOINTS, EMB.home, T0)
    assert faults(a) == {InputFault.CAMERA_SKEW: "wrist,front"}
    assert "300 ms apart" in a.check(T0)[0].message
    assert assembler(max_skew_s=0.0).limits.max_skew_s == 0.0


def test_frozen_camera_after_n_identical_updates_then_recovery():
    a = assembler(frozen_after=3)
    feed(a)
    img = frame(5)
    for k in range(3):  # the first one is new content, then 2 identical repeats: not yet frozen
        add(a, "wrist", T0 + 0.01 * k, 0, img=img)
    assert a.check(T0 + 0.03) == []
    add(a, "wrist", T0 + 0.03, 0, img=img)  # third identical update in a row
    found = a.check(T0 + 0.03)
    assert [(p.fault, p.subject) for p in found] == [(InputFault.CAMERA_FROZEN, "wrist")]
    assert "last 4 frames are identical" in found[0].message
    add(a, "wrist", T0 + 0.04, 9)  # moving again
    assert a.check(T0 + 0.04) == []


def test_frozen_check_off():
    a = assembler(frozen_after=0)
    feed(a)
    for k in range(10):
        add(a, "wrist", T0 + 0.001 * k, 3)
    assert a.check(T0) == []


def test_stale_joint_state_and_off_switch():
    a = assembler()
    feed(a, stamp=T0)
    for k, cam in enumerate(CAMS):
        add(a, cam, T0 + 1.0 - 0.01 * k, 50 + k)
    assert faults(a, T0 + 1.0) == {InputFault.JOINT_STATE_STALE: ""}
    b = assembler(joint_state_max_age_s=0)
    feed(b, stamp=T0)
    for k, cam in enumerate(CAMS):
        add(b, cam, T0 + 1.0 - 0.01 * k, 50 + k)
    assert b.check(T0 + 1.0) == []


def test_empty_instruction():
    a = assembler()
    feed(a)
    assert a.set_instruction("") is True
    assert faults(a) == {InputFault.INSTRUCTION_EMPTY: ""}
    assert a.set_instruction("go") is True and a.set_instruction("go") is False
    assert a.check(T0) == []


def test_undecodable_frame_is_reported_until_replaced():
    a = assembler()
    feed(a)

    def broken():
        raise ObservationError("/cameras/wrist/image_raw/compressed: 12 bytes are not a decodable JPEG/PNG image")
    a.add_frame("wrist", T0, broken, 1234)
    assert a.check(T0) == []  # unknown until somebody decodes it
    with pytest.raises(ObservationNotReady) as err:
        a.assemble(T0)
    assert err.value.faults == (InputFault.CAMERA_BAD_FRAME,) and "'wrist'" in str(err.value)
    assert faults(a) == {InputFault.CAMERA_BAD_FRAME: "wrist"}  # remembered without decoding again
    a.add_frame("front", T0, broken, 99, error="encoding 'mono8' is not supported")  # known at receipt
    assert set(faults(a)) == {InputFault.CAMERA_BAD_FRAME}
    feed(a, value=3)
    a.assemble(T0)


def test_every_problem_is_listed_at_once():
    a = assembler()
    a.set_instruction("")
    with pytest.raises(ObservationNotReady) as err:
        a.assemble(T0)
    assert set(err.value.faults) == {InputFault.CAMERA_MISSING, InputFault.JOINT_STATE_MISSING,
                                     InputFault.INSTRUCTION_EMPTY}
    assert [p.subject for p in err.value.problems[:2]] == CAMS
    assert isinstance(err.value, ObservationError)


def test_epoch_changes_on_source_restart_frame_id_size_and_resumption():
    a = assembler(max_skew_s=0)
    feed(a)
    epoch = lambda: a.assemble(T0 + 5).camera_epochs["front"]  # noqa: E731
    a.set_joint_state(JOINTS, EMB.home, T0 + 5)
    add(a, "wrist", T0 + 5, 1)
    add(a, "front", T0 + 0.05, 1, source="front_optical")
    base = a.camera_stats(T0)["front"]["epoch"]
    add(a, "front", T0 + 0.10, 2, source="front_optical")
    assert a.camera_stats(T0)["front"]["epoch"] == base  # same stream
    add(a, "front", T0 + 0.15, 3, source="front_rgb")  # another frame_id: another stream
    assert a.camera_stats(T0)["front"]["epoch"] == base + 1
    add(a, "front", T0 + 0.12, 4, source="front_rgb")  # capture time went backwards: restarted
    assert a.camera_stats(T0)["front"]["epoch"] == base + 2
    add(a, "front", T0 + 1.0, 5, source="front_rgb")  # resumed after a gap > max_age_s
    assert a.camera_stats(T0)["front"]["epoch"] == base + 3
    add(a, "front", T0 + 4.9, 6, source="front_rgb")
    add(a, "front", T0 + 4.95, 6, source="front_rgb", img=frame(6))
    first = epoch()
    add(a, "front", T0 + 4.99, 7, source="front_rgb", img=frame(7, h=60, w=80))  # new size
    assert epoch() == first + 1
    add(a, "front", T0 + 5.0, 8, source="front_rgb", img=frame(8, h=60, w=80))
    assert epoch() == first + 1  # same size again: same stream


def test_sequence_counts_frame_updates_only():
    a = assembler()
    assert a.sequence == 0
    feed(a)
    a.set_joint_state(JOINTS, EMB.home, T0)
    assert a.sequence == 2
    a.clear()
    assert {p.fault for p in a.check(T0)} == {InputFault.CAMERA_MISSING, InputFault.JOINT_STATE_MISSING}


def test_unknown_camera_and_bad_limits():
    a = assembler()
    with pytest.raises(KeyError, match="top"):
        a.add_frame("top", T0, lambda: frame(), 1)
    with pytest.raises(ConfigError, match="max_age_s"):
        limits(camera_max_age_s={"front": 0.0, "wrist": 1.0})
    with pytest.raises(ConfigError, match="frozen_after"):
        limits(frozen_after=-1)
    with pytest.raises(ConfigError, match="no max_age_s"):
        ObservationAssembler(CAMS, JOINTS, limits(camera_max_age_s={"front": 1.0}))


def test_fingerprints():
    a, b = frame(1), frame(1)
    assert frame_fingerprint(a) == frame_fingerprint(b)
    b[20:28, 20:28] = 255  # an 8 px patch anywhere changes the sampled pixels
    assert frame_fingerprint(a) != frame_fingerprint(b)
    assert frame_fingerprint(frame(1, 48, 64)) != frame_fingerprint(np.zeros((64, 48, 3), np.uint8))
    assert bytes_fingerprint(b"\xff\xd8abc") == bytes_fingerprint(bytearray(b"\xff\xd8abc"))
    assert bytes_fingerprint(b"\xff\xd8abc") != bytes_fingerprint(b"\xff\xd8abd")


def test_concurrent_updates_and_assembly():
    a = assembler(frozen_after=0, max_skew_s=0, camera_max_age_s={c: 100.0 for c in CAMS}, joint_state_max_age_s=0)
    feed(a)
    stop = threading.Event()

    def writer():
        k = 0
        while not stop.is_set():
            k += 1
            for cam in CAMS:
                add(a, cam, T0 + k * 1e-3, k)
            a.set_joint_state(JOINTS[::-1], EMB.home[::-1], T0)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(300):
            got = a.assemble(T0 + 1)
            np.testing.assert_array_equal(got.observation.state, EMB.home)
    finally:
        stop.set()
        t.join()
