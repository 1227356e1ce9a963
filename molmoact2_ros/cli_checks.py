"""Up-front checks of command-line values, shared by every ``molmoact2-ros`` subcommand.

A bad value must be refused before any work starts (no node process, no model load, no bag read) with one
line naming the option, and exit status 2: each check raises :class:`ConfigError`, which the CLI prints as
one line. Light to import (no ROS, no torch): the commands call these first.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from molmoact2_ros.core.errors import ConfigError


def check_number(value: float, option: str, *, low: float = 0.0, strict: bool = False, high: float | None = None,
                 meaning: str = "") -> float:
    """``value`` must be finite and ``>= low`` (``> low`` when ``strict``) and, if given, ``<= high``.
    ``meaning`` (e.g. "0 = until Ctrl-C") is appended to the error so the user sees what the bound is for."""
    ok = math.isfinite(value) and (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise ConfigError(f"{option} must be {bound}, not {value:g}" + (f" ({meaning})" if meaning else ""))
    return value


def check_writable(path: str | Path, option: str, *, what: str = "output directory", is_file: bool = False) -> Path:
    """Refuse, in one line naming ``path`` and ``option``, an output that cannot be created, before any work.

    ``is_file``: ``path`` is a file to write (its folder must be writable), else a directory to create or
    write into. Creates nothing: it finds the nearest existing folder on the way to ``path`` and makes
    (and removes) a temporary directory there, which is what creating the output will need. Permission
    bits alone would not tell (root may write anywhere, /proc refuses everyone, a read-only mount)."""
    p = Path(path).expanduser()
    if p.exists():
        if is_file and p.is_dir():
            raise ConfigError(f"cannot write {what} {str(p)!r} ({option}): it is a directory; name a file")
        if not is_file and not p.is_dir():
            raise ConfigError(f"cannot create {what} {str(p)!r} ({option}): a file of that name exists; "
                              "choose a directory path")
    folder = (p.parent if is_file else p).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    verb = "write" if is_file else "create"
    if not existing.is_dir():
        raise ConfigError(f"cannot {verb} {what} {str(p)!r} ({option}): {str(existing)!r} is a file, not a "
                          "directory; choose a writable path")
    try:
        Path(tempfile.mkdtemp(prefix=".molmoact2_write_probe-", dir=existing)).rmdir()
    except OSError as exc:
        raise ConfigError(f"cannot {verb} {what} {str(p)!r} ({option}): {str(existing)!r} is not writable "
                          f"({exc.strerror or exc}); choose a writable path") from None
    return p
