"""The colcon workspace (ros2_ws/) builds, and what it installs works from outside the source tree.

Built once per install kind (copy, --symlink-install) into a temporary build/install/log base. Checks the
ament layout `ros2 run` / `ros2 launch` rely on (executables under lib/molmoact2_ros, launch and config
files under share/molmoact2_ros, the ament index marker), then, with the install sourced (its setup.bash)
and the working directory outside the tree: `molmoact2-ros list-embodiments` from the install space, the
built-in configs, DDS profiles, gym mappings and launch file resolving from it, and a real driver node
started from the install space's executable reporting ready over DDS. `ros2 run` itself (ros2cli) has no
PyPI wheel, so the test runs the executable that `ros2 run molmoact2_ros driver_node` would run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from molmoact2_ros.nodes.runtime_env import STATUS_FILE_VAR, private_domain_id

pytest.importorskip("colcon_core")
pytestmark = [pytest.mark.system, pytest.mark.ros]

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = ROOT / "ros2_ws"
PKG = "molmoact2_ros"
EXECUTABLES = ("perception_node", "policy_node", "driver_node", "sim_node", "molmoact2-ros")


@pytest.fixture(scope="module", params=["copy", "symlink"])
def install(request, tmp_path_factory) -> tuple[str, Path]:
    base = tmp_path_factory.mktemp(f"colcon_{request.param}")
    colcon = Path(sys.executable).parent / "colcon"
    cmd = [str(colcon), "--log-base", str(base / "log"), "build", "--build-base", str(base / "build"),
           "--install-base", str(base / "install"), "--event-handlers", "console_cohesion+"]
    if request.param == "symlink":
        cmd.append("--symlink-install")
    env = {**os.environ, "PATH": f"{colcon.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(cmd, cwd=WORKSPACE, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return request.param, base / "install"


def _sourced(install: Path, script: str, cwd: Path, extra_env: dict[str, str] | None = None,
             **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run ``script`` in bash with the install's setup.bash sourced, from ``cwd`` (outside the tree)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
    env.update(extra_env or {})
    cmd = ["bash", "-c", f"source {install}/setup.bash && {script}"]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)


def test_layout_is_what_ros2_run_and_launch_expect(install):
    _, inst = install
    lib = inst / PKG / "lib" / PKG
    for exe in EXECUTABLES:
        assert os.access(lib / exe, os.X_OK), f"{lib / exe} missing or not executable"
    share = inst / PKG / "share" / PKG
    for rel in ("package.xml", "launch/bringup.launch.py", "config/embodiments/so101.yaml",
                "config/dds/fastdds_local_large_data.xml", "config/gym/aloha_transfer_cube.yaml"):
        assert (share / rel).is_file(), f"{share / rel} missing"
    assert (inst / PKG / "share" / "ament_index" / "resource_index" / "packages" / PKG).is_file()


def test_installed_cli_finds_configs_from_the_install_space(install, tmp_path):
    kind, inst = install
    lib = inst / PKG / "lib" / PKG
    done = _sourced(inst, f"{lib}/molmoact2-ros list-embodiments", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    names = [ln.split()[0] for ln in done.stdout.splitlines()]
    assert {"so100", "so101", "yam_bimanual", "franka_droid"} <= set(names), done.stdout
    probe = ("import molmoact2_ros; from molmoact2_ros.resources import data_dirs; "
             "from molmoact2_ros.bringup import dds_profile_path; "
             "from ament_index_python.packages import get_package_share_directory as share; "
             "print(molmoact2_ros.__file__); "
             "print(*[data_dirs('config', d)[0] for d in ('embodiments', 'dds', 'gym')], sep='\\n'); "
             "print(dds_profile_path('local_large_data')); print(share('molmoact2_ros') + '/launch')")
    done = _sourced(inst, f"{sys.executable} -c \"{probe}\"", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    module, emb, dds, gym, profile, launch_dir = done.stdout.split()
    share = inst / PKG / "share" / PKG
    assert Path(launch_dir, "bringup.launch.py").is_file()
    assert Path(launch_dir).resolve() == (share / "launch").resolve()
    if kind == "copy":  # the installed copy of the code, reading the installed copy of the data
        assert Path(module).is_relative_to(inst), module
        for found, rel in ((emb, "config/embodiments"), (dds, "config/dds"), (gym, "config/gym")):
            assert Path(found) == share / rel, (found, rel)
        assert Path(profile).is_relative_to(share)
    else:  # --symlink-install: code and data stay in the source tree the install links to
        assert Path(module).resolve().is_relative_to(ROOT), module
        assert Path(emb).resolve() == (ROOT / "config" / "embodiments").resolve()
        assert Path(profile).is_file()


def test_node_starts_from_the_install_space(install, tmp_path):
    _, inst = install
    status = tmp_path / "driver.status"
    env = {STATUS_FILE_VAR: str(status), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_DOMAIN_ID": str(private_domain_id(os.getpid() * 3 + len(str(inst))))}
    proc = _sourced(inst, f"exec {inst}/{PKG}/lib/{PKG}/driver_node --ros-args -r __node:=colcon_driver "
                          "-p backend:=mock -p embodiment:=so101", tmp_path, env, background=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if status.is_file() and status.read_text().strip():
                break
            time.sleep(0.1)
        assert status.is_file() and status.read_text().strip() == "ready", \
            (status.read_text() if status.is_file() else "no status", proc.poll())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert proc.returncode in (0, -signal.SIGINT, 130), out
