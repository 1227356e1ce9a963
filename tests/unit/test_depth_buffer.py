"""backends.policy.depth_buffer: when the Think depth cache is carried, and when it is dropped."""

from __future__ import annotations

import numpy as np
import pytest

from molmoact2_ros.backends.policy.depth_buffer import CameraIdentity, DepthBuffer


def cache(tag: int) -> dict:
    return {"image": np.full((4, 4, 3), tag, np.uint8), "depth_bins": np.full(100, tag, np.int64)}


def call(buf: DepthBuffer, stamp: float, instruction: str = "pick", epoch: int = 0, tag: int = 0):
    """One Think call: take the cache, 'run', store what the model returned. Returns the ticket."""
    ticket = buf.take(instruction=instruction, camera_epoch=epoch, stamp_s=stamp)
    assert buf.store(ticket, cache(tag), stamp)
    return ticket


def test_carried_between_calls():
    buf = DepthBuffer(max_gap_s=1.0)
    first = call(buf, 10.0, tag=1)
    assert first.cache is None and first.reset_reason == "start"
    second = call(buf, 10.1, tag=2)
    assert second.reset_reason == "" and second.cache["depth_bins"][0] == 1
    assert call(buf, 10.2).cache["depth_bins"][0] == 2
    assert buf.resets == {"start": 1} and buf.total_resets == 1


@pytest.mark.parametrize(("change", "reason"), [
    (lambda buf: {"instruction": "place"}, "instruction"),
    (lambda buf: {"epoch": 1}, "camera_change"),
    (lambda buf: {"stamp": 12.0}, "gap"),
    (lambda buf: {"stamp": 9.0}, "gap"),  # capture time went backwards (bag loop, clock reset)
    (lambda buf: buf.reset("new_episode") or {}, "new_episode"),
])
def test_reset_rules(change, reason):
    buf = DepthBuffer(max_gap_s=1.0)
    call(buf, 10.0)
    call(buf, 10.5)
    kwargs = {"stamp": 10.6, "instruction": "pick", "epoch": 0}
    kwargs.update(change(buf))
    ticket = call(buf, kwargs["stamp"], kwargs["instruction"], kwargs["epoch"])
    assert ticket.cache is None and ticket.reset_reason == reason
    assert buf.last_reset_reason == reason and buf.resets[reason] == 1
    following = call(buf, kwargs["stamp"] + 0.1, kwargs["instruction"], kwargs["epoch"])
    assert following.cache is not None  # and carried again from there


def test_reset_while_a_call_is_in_flight_wins():
    buf = DepthBuffer()
    call(buf, 1.0)
    ticket = buf.take(instruction="pick", camera_epoch=0, stamp_s=1.1)
    assert ticket.cache is not None
    buf.reset("instruction")  # arrives while the model runs
    assert buf.store(ticket, cache(7), 1.1) is False  # its cache belongs to the old task
    nxt = buf.take(instruction="place", camera_epoch=0, stamp_s=1.2)
    assert nxt.cache is None and nxt.reset_reason == "instruction"


def test_failed_call_keeps_the_pending_reason():
    buf = DepthBuffer()
    call(buf, 1.0)
    buf.reset("new_episode")
    buf.take(instruction="pick", camera_epoch=0, stamp_s=1.1)  # the model failed: nothing stored
    retry = call(buf, 1.2)
    assert retry.reset_reason == "new_episode" and buf.resets == {"start": 1, "new_episode": 1}


def test_disabled_never_carries():
    buf = DepthBuffer(enabled=False)
    for k in range(3):
        ticket = call(buf, 1.0 + 0.1 * k)
        assert ticket.cache is None
    assert buf.resets == {"disabled": 3}


def test_bad_gap():
    with pytest.raises(ValueError, match="max_gap_s"):
        DepthBuffer(max_gap_s=0)


def test_camera_identity_numbers_identities_not_time():
    ident = CameraIdentity()
    assert [ident.epoch_of(("front", (480, 640, 3))) for _ in range(3)] == [0, 0, 0]
    assert ident.epoch_of(("front", (240, 320, 3))) == 1  # resized: another stream
    assert ident.epoch_of(("front", (240, 320, 3))) == 1
    assert ident.epoch_of(("front_2", (240, 320, 3))) == 2  # another frame_id
    assert ident.epoch_of(("front", (480, 640, 3))) == 3  # and back: a change again


def test_a_pause_of_the_same_camera_is_a_gap_not_a_camera_change():
    """The node passes identity epochs, so a camera that stopped for longer than max_gap_s and came back
    resets as a gap; the same pause with a resized frame is a camera change (the scene itself changed)."""
    ident = CameraIdentity()
    buf = DepthBuffer(max_gap_s=1.0)
    same = ("front", (480, 640, 3))
    call(buf, 10.0, epoch=ident.epoch_of(same))
    call(buf, 10.1, epoch=ident.epoch_of(same))
    assert call(buf, 12.0, epoch=ident.epoch_of(same)).reset_reason == "gap"
    assert call(buf, 14.0, epoch=ident.epoch_of(("front", (240, 320, 3)))).reset_reason == "camera_change"
    assert buf.resets == {"start": 1, "gap": 1, "camera_change": 1}
