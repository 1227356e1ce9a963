"""Hugging Face environment for loading MolmoAct2 checkpoints: a writable module cache, offline local loads.

MolmoAct2 ships as remote code. ``transformers`` copies that code into its module cache
(``$HF_MODULES_CACHE``, default ``$HF_HOME/modules``) and imports it from there, so the cache must be
writable even when ``HF_HOME`` is a read-only volume of downloaded weights (a common container setup).
``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import; to keep a local load from ever touching the
network we therefore both pass ``local_files_only=True`` and switch the already-imported flag for the
duration of the load.

This module imports neither torch nor transformers at import time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "MOLMOACT2_ROS_CACHE"


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Where this package caches generated artefacts: ``override``, ``$MOLMOACT2_ROS_CACHE`` or ~/.cache."""
    root = override or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "molmoact2_ros"
    return Path(root).expanduser()


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError:
        return False
    return True


def ensure_writable_module_cache(root: str | os.PathLike[str] | None = None) -> Path:
    """Make sure transformers' remote-code module cache is writable; return the directory it will use.

    ``$HF_MODULES_CACHE``, else ``$HF_HOME/modules`` (``HF_HOME`` defaulting as huggingface_hub does), is
    kept when writable. Otherwise ``HF_MODULES_CACHE`` is pointed under this package's cache root. Only
    the module cache moves: the hub cache (downloaded weights) stays where the user put it.
    """
    explicit = os.environ.get("HF_MODULES_CACHE")
    if explicit:
        current = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        current = Path(os.environ.get("HF_HOME") or Path(xdg) / "huggingface").expanduser() / "modules"
    if _writable_dir(current):
        target = current
    else:
        target = cache_root(root) / "hf_modules"
        target.mkdir(parents=True, exist_ok=True)
        os.environ["HF_MODULES_CACHE"] = str(target)
    _sync_imported_transformers(target)
    return target


def _sync_imported_transformers(target: Path) -> None:
    """transformers reads HF_MODULES_CACHE at import: if it got an unwritable one, repoint it."""
    dyn = sys.modules.get("transformers.dynamic_module_utils")
    if dyn is None:
        return
    current = Path(getattr(dyn, "HF_MODULES_CACHE", str(target)))
    if current == target or _writable_dir(current):
        return
    # Both names are module globals looked up at call time by get_cached_module_file / init_hf_modules.
    dyn.HF_MODULES_CACHE = str(target)
    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None:
        hub.HF_MODULES_CACHE = str(target)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Forbid network access through huggingface_hub for the duration of a local load."""
    previous_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    previous_flag = getattr(constants, "HF_HUB_OFFLINE", None) if constants is not None else None
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            if previous_flag is None:
                # Imported inside the block, so it read our "1": give it what the restored env says.
                restored = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
                previous_flag = _is_true(restored)
            constants.HF_HUB_OFFLINE = previous_flag


def _is_true(value: str | None) -> bool:
    # The same truthy spellings huggingface_hub.constants accepts.
    return value is not None and value.upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def quiet_remote_code_warnings() -> Iterator[None]:
    """Hide the one deprecation warning MolmoAct2's remote code triggers on every config it builds.

    The remote code calls ``rope_config_validation`` (deprecated in transformers 5); we cannot change
    that code, and the warning would otherwise open every node log. Nothing else is filtered.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*rope_config_validation.*", category=FutureWarning)
        yield
