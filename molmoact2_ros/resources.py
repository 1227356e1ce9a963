"""Where the repository's data files (embodiment configs, DDS profiles, launch files) are found once installed.

A source checkout (editable install, ``ros2_ws`` with ``--symlink-install``) reads them from the tree. A wheel or a
non-editable ``pip install .`` puts them, as setup.py's ``data_files``, under the install scheme's data path
(``<venv>/share/molmoact2_ros/...``, or ``~/.local/share/...`` for ``--user``); a colcon install puts them under
``install/molmoact2_ros/share/molmoact2_ros/...``, which the ament index knows. No rclpy here.
"""

from __future__ import annotations

import site
import sysconfig
from pathlib import Path

PACKAGE = "molmoact2_ros"
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def data_dirs(*parts: str) -> list[Path]:
    """Existing directories holding ``parts`` (e.g. ``"config", "embodiments"``): the source tree first, then
    every installed share copy. Duplicates (a symlinked install) are listed once."""
    candidates = [SOURCE_ROOT.joinpath(*parts)]
    for prefix in (sysconfig.get_path("data"), site.getuserbase()):
        candidates.append(Path(prefix, "share", PACKAGE, *parts))
    try:  # a colcon/ament install
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE), *parts))
    except (ImportError, LookupError, OSError, ValueError):  # no ament index here, or not in it
        pass
    seen: set[Path] = set()
    found = []
    for d in candidates:
        if d.is_dir() and (real := d.resolve()) not in seen:
            seen.add(real)
            found.append(d)
    return found
