"""In the test command a missing required dependency fails the run (tests/conftest.py): proven by running
pytest, with that conftest, in a fresh interpreter on which torch and rclpy cannot be imported."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
TESTS = {
    # What tests/node/test_policy_node.py does at module level.
    "test_needs_torch": "import pytest\npytest.importorskip('torch')\n\ndef test_policy():\n    pass\n",
    # What tests/unit/test_images.py does inside a test.
    "test_needs_rclpy": "import pytest\n\ndef test_node():\n    pytest.importorskip('rclpy')\n",
    # Not something the test command installs: stays a skip.
    "test_needs_mujoco": "import pytest\n\ndef test_sim():\n    pytest.importorskip('mujoco_not_installed_here')\n",
    # What no install provides: stays a skip.
    "test_needs_a_device": "import pytest\n\ndef test_camera():\n    pytest.skip('no RealSense device connected')\n",
}


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(**TESTS)
    # A host where torch and rclpy are not installed: stand-ins that cannot be imported, first on the path.
    hidden = pytester.mkdir("hidden")
    for name in ("torch", "rclpy"):
        (hidden / name).mkdir()
        (hidden / name / "__init__.py").write_text(
            "raise ModuleNotFoundError(f'No module named {__name__!r}', name=__name__)\n")
    monkeypatch.setenv("PYTHONPATH", str(hidden))
    return pytester


def test_required_dependency_missing_is_an_error_under_the_variable(suite, monkeypatch):
    monkeypatch.setenv("MOLMOACT2_ROS_REQUIRE_DEPS", "1")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--continue-on-collection-errors", "-rs")
    result.assert_outcomes(failed=1, errors=1, skipped=2)
    assert result.ret != 0
    out = result.stdout.str()
    assert "ERROR collecting test_needs_torch.py" in out
    assert "torch is a required dependency of the test command" in out
    assert "rclpy is a required dependency of the test command" in out
    assert "no RealSense device connected" in out and "could not import 'mujoco_not_installed_here'" in out


def test_without_the_variable_the_same_run_skips(suite, monkeypatch):
    monkeypatch.delenv("MOLMOACT2_ROS_REQUIRE_DEPS", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(skipped=4)
    assert result.ret == 0
