"""Opening a recorded bag, the same way for replay, eval and export: where it is, a reader for it, and what the
recorder wrote about it. Every problem is a ``BagError`` naming the bag. No rclpy here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from molmoact2_ros.bags.topics import BAG_EMBODIMENT_KEY, BagError


def resolve_bag(bag: str | Path) -> Path:
    """The path rosbags opens for ``bag``: a bag directory, or the directory of a bag file in one (its
    metadata.yaml lives there)."""
    path = Path(bag)
    if not path.exists():
        raise BagError(f"bag {str(path)!r} not found; pass a rosbag2 directory (or its .mcap/.db3 file)")
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        return path.parent
    problem = not_a_bag_directory(path)
    if problem:
        raise BagError(f"bag {str(path)!r} {problem}")
    return path


def not_a_bag_directory(path: Path) -> str:
    """Why directory ``path`` is not a rosbag2 directory ('' when it has a metadata.yaml or is not a
    directory: rosbags opens a lone .mcap file by itself). Names the bag files it holds, if any."""
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return ""
    files = sorted(f.name for f in path.iterdir() if f.suffix in (".mcap", ".db3"))
    held = f" (it holds {', '.join(files[:3])}{', ...' if len(files) > 3 else ''})" if files else ""
    return (f"is not a rosbag2 directory (no metadata.yaml){held}; pass the .mcap file itself or a bag "
            "directory")


def typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def open_bag(path: str | Path, hint: str = "re-record it (a recorder killed with SIGKILL leaves no index)") -> Any:
    """An open rosbags AnyReader for ``path`` (resolved as :func:`resolve_bag` does)."""
    from rosbags.highlevel import AnyReader

    bag = resolve_bag(path)
    try:
        reader = AnyReader([bag], default_typestore=typestore())
        reader.open()
    except Exception as exc:  # rosbags raises its own error types per storage plugin, OSError, struct errors
        raise BagError(f"bag {str(bag)!r} cannot be read, it is truncated or corrupt "
                       f"({type(exc).__name__}: {exc}); {hint}") from exc
    return reader


def recorded_embodiment(bag: str | Path) -> str:
    """The embodiment name the recorder stored in the bag's metadata.yaml custom_data ('' if none). Read from
    the file itself: rosbags' reader does not expose custom_data."""
    import yaml

    meta = resolve_bag(bag) / "metadata.yaml"
    if not meta.is_file():
        return ""
    try:
        info = (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise BagError(f"bag {str(bag)!r}: metadata.yaml cannot be read ({exc}); the bag is corrupt") from exc
    custom = (info.get("custom_data") or {}) if isinstance(info, dict) else {}
    return str(custom.get(BAG_EMBODIMENT_KEY) or "") if isinstance(custom, dict) else ""
