"""Property test of the whole per-tick path: whatever arrives and whatever the hardware does, every write is
finite, inside the envelope, within the speed and acceleration limits, a controlled stop whenever the arm is
not following a plan, and absent while a relaxed arm is e-stopped; and nothing raises.

The scenarios are in ``safety_fuzz.py``. The test command runs ``MOLMOACT2_ROS_PROPERTY_EXAMPLES`` examples
(default 200, about 40,000 ticks); benchmarks/bench_safety_property.py runs 20,000 and reports the counts.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from safety_fuzz import Scenario, run_scenario, scenarios

EXAMPLES = int(os.environ.get("MOLMOACT2_ROS_PROPERTY_EXAMPLES", "200"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_every_write_is_safe_on_the_whole_per_tick_path(sc: Scenario):
    counts = run_scenario(sc)
    assert counts.ticks == sc.ticks


def test_the_fuzzer_reaches_the_states_it_claims_to():
    """A fuzzer that never e-stops, faults or writes proves nothing: check one busy scenario covers them."""
    busy = Scenario(embodiment="so101", seed=7, ticks=3000, fault_action="relax", heartbeat=True, chunk_every=3,
                    jitter=0.3, p_stall=0.01, offset_scale=0.3, speed_scale=1.5, max_latency_s=0.5, p_hostile=0.3,
                    p_read_fault=0.005, p_write_fault=0.005, p_nan_reading=0.002, p_estop=0.005, p_reset=0.2,
                    p_toggle=0.01, p_clock_jump=0.003, noise_std=0.002)
    counts = run_scenario(busy)
    assert counts.writes > 1000
    for state in ("RUNNING", "HOLD", "ESTOP", "FAULT", "IDLE"):
        assert counts.states[state] > 0, counts.states
    for reason in ("non_finite", "out_of_range", "joint_names", "too_old", "future_stamp"):
        assert counts.rejected[reason] > 0, counts.rejected
