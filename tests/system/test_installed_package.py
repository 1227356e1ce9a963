"""A non-editable install works from outside the source tree (issue 12 item 1): the built-in embodiment configs
and DDS profiles resolve from the installed package data, and the demo closes the loop.

The wheel is built from this checkout and installed, without dependencies, into a fresh venv whose other
packages come from the test venv (so no download); every command runs with the working directory outside the
source tree, and the test checks that the package imported is the installed copy, not the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.ros, pytest.mark.torch]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel_install")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_dir = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                    "print(sysconfig.get_path('purelib'))"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    # Dependencies from the test venv (processed as a site dir, so its own .pth files apply); the wheel's copy
    # of molmoact2_ros in the new venv's own site-packages comes first on sys.path.
    (site_dir / "zz_test_deps.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    wheel = next(wheels.glob("molmoact2_ros-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    return venv


def _run(venv: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return subprocess.run(list(args), cwd=venv.parent, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_copy_is_what_runs(installed):
    res = _run(installed, str(installed / "bin" / "python"), "-c",
               "import molmoact2_ros, molmoact2_ros.bringup as b; print(molmoact2_ros.__file__); "
               "print(b.dds_profile_path(b.DEFAULT_DDS_PROFILE))")
    assert res.returncode == 0, res.stderr
    module, profile = res.stdout.split()
    assert module.startswith(str(installed)) and not module.startswith(str(ROOT))
    assert profile.startswith(str(installed))


def test_builtin_embodiments_resolve_from_the_installed_share(installed):
    res = _run(installed, str(installed / "bin" / "molmoact2-ros"), "list-embodiments")
    assert res.returncode == 0, res.stderr
    for name in ("so101", "so100", "yam_bimanual", "franka_droid"):
        assert name in res.stdout
    res = _run(installed, str(installed / "bin" / "molmoact2-ros"), "check-config", "so101")
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr


def test_a_short_demo_runs_from_the_installed_package(installed):
    res = _run(installed, str(installed / "bin" / "molmoact2-ros"), "demo", "--quiet", "--hardware", "mock",
               "--duration", "4", timeout=400)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr[-3000:]}"
    assert "OK: loop closed" in res.stdout
