"""The live driver refuses a chunk longer than ``chunk.max_steps`` and keeps following the stream (issue 13
item 3): with the byte-level decoder (default) before any point is read, with rclpy deserialisation after."""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import DriverHarness, PolicyStandIn, trajectory

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("decode", ["cdr", "message"])
def test_a_20000_step_chunk_is_rejected_too_long_and_the_stream_goes_on(harness_factory, decode):
    h: DriverHarness = harness_factory(chunk_decode=decode)
    h.ready()
    policy = PolicyStandIn(h).start()
    h.wait_state("RUNNING")
    assert h.emb.chunk.max_steps_accepted == 4 * h.emb.chunk.action_horizon
    # The stand-in pauses meanwhile: the chunk subscription keeps only the newest message (by design), so on a
    # busy machine its next chunk could replace the huge one before the driver takes it.
    policy.stop()
    huge = np.tile(h.latest(), (20_000, 1))
    h.chunk_pub.publish(trajectory(h.emb, huge, h.driver.get_clock().now().nanoseconds))
    h.wait_for(lambda: h.di("rejected_too_long") == 1, timeout=60.0, what="too_long rejection")
    policy.start()
    executed = h.di("chunks_executed")
    h.wait_for(lambda: h.di("chunks_executed") > executed + 1, timeout=30.0, what="the stream goes on")
    assert h.d("state") == "RUNNING" and h.di("tick_exceptions") == 0
