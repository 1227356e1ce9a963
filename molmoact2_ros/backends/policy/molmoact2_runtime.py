"""MolmoAct2 policy runtime: one checkpoint, one embodiment, ``predict(Observation) -> ActionChunk``.

This is the only place that talks to the model. It checks a checkpoint against the embodiment before
loading anything heavy (so a wrong directory or norm tag fails in milliseconds with one actionable line),
loads it through the ``transformers`` Auto classes with the checkpoint's remote code, and converts between
the robot's joint space (chunks, ``/joint_states``) and the model's space (norm stats, training data)
with the embodiment's affine map.

torch and transformers are imported when a runtime is constructed, never at module import, so the
robot PC can import the other backends without them. No rclpy here.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import math
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from molmoact2_ros.backends.policy.hf_env import (
    ensure_writable_module_cache,
    hub_offline,
    quiet_remote_code_warnings,
)
from molmoact2_ros.backends.policy.think_fast_path import BiasMemo, DepthMaskProbe, EarlyRule, depth_call
from molmoact2_ros.core.chunk import ActionChunk, Observation
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import CheckpointError, ConfigError, MolmoAct2RosError, ObservationError

log = logging.getLogger(__name__)

NORM_STATS_FILE = "norm_stats.json"
DTYPES = ("fp32", "bf16")
ACTION_MODES = ("continuous", "discrete")
# Checkpoint action modes (config.action_mode) that can decode FAST action tokens.
_DISCRETE_CAPABLE = ("discrete", "both")
# What transformers follows when it copies remote code: "from .module import ...".
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import", re.MULTILINE)
# "owner/name" with Hugging Face's allowed characters; anything else is treated as a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class InferenceError(MolmoAct2RosError):
    """The model failed during one inference (out of memory, depth decoding did not finish, ...)."""


# What the policy node needs beyond the base install: the `policy` extra (README, install by host role).
POLICY_EXTRA_MODULES = ("torch", "transformers", "huggingface_hub", "safetensors")
POLICY_EXTRA_HINT = ("install the `policy` extra on the policy host: pip install 'molmoact2_ros[policy]' "
                     "(torch, LeRobot 0.6.1, transformers; a robot PC runs perception and drivers without it)")


def require_policy_extra() -> None:
    """Raise ConfigError naming the missing modules when this host lacks the ``policy`` extra.

    Without it the first failure would be whatever module happens to be imported first (on a robot PC:
    "No module named 'huggingface_hub'"), which says nothing about what to install. Imports torch (the
    runtime needs it next anyway), so a broken torch (a missing CUDA library) is reported here too.
    """
    missing = []
    for name in POLICY_EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            inner = exc.name or name
            missing.append(name if inner.split(".")[0] == name else f"{name} (needs {inner})")
        except (ImportError, OSError) as exc:  # installed but broken: a shared library that does not load
            missing.append(f"{name} (installed but fails to import: {_first_line(exc)})")
    if missing:
        raise ConfigError(f"the policy node needs torch and the `policy` extra; missing on this host: "
                          f"{', '.join(missing)}; {POLICY_EXTRA_HINT}")


def is_hub_id(checkpoint: str | Path) -> bool:
    """True when ``checkpoint`` names a Hugging Face repo rather than a local directory."""
    text = str(checkpoint)
    if isinstance(checkpoint, Path) or Path(text).expanduser().exists():
        return False
    return bool(_HUB_ID.match(text)) and not text.startswith(".")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _stats_dim(stats: Any) -> int | None:
    """Feature width of an action/state stats block (the length of its first per-feature list)."""
    if not isinstance(stats, dict):
        return None
    for key in ("q01", "q99", "min", "max", "mean", "std", "mask", "names"):
        value = stats.get(key)
        if isinstance(value, list):
            return len(value)
    return None


def check_norm_stats(
    payload: Any, source: str, embodiment: EmbodimentConfig, norm_tag: str, n_action_steps: int
) -> dict[str, Any]:
    """Check one tag of a ``norm_stats.json`` payload against the embodiment; return the tag's metadata."""
    tags = payload.get("metadata_by_tag") if isinstance(payload, dict) else None
    if not isinstance(tags, dict) or not tags:
        raise CheckpointError(f"{source} has no metadata_by_tag mapping: not a MolmoAct2 norm stats file")
    if norm_tag not in tags:
        raise CheckpointError(
            f"norm tag {norm_tag!r} is not in {source}; tags present: {', '.join(sorted(tags))} "
            "(set policy.norm_tag in the embodiment or pass norm_tag=)"
        )
    meta = tags[norm_tag]
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: metadata for tag {norm_tag!r} is not a mapping")
    cameras = meta.get("camera_keys")
    if cameras is not None and len(cameras) != len(embodiment.camera_names):
        raise CheckpointError(
            f"camera count mismatch: tag {norm_tag!r} in {source} expects {len(cameras)} cameras "
            f"{list(cameras)} but embodiment {embodiment.name!r} has {len(embodiment.camera_names)} "
            f"{embodiment.camera_names}"
        )
    for kind in ("action", "state"):
        dim = _stats_dim(meta.get(f"{kind}_stats"))
        if dim is None:
            raise CheckpointError(f"{source}: tag {norm_tag!r} has no {kind}_stats")
        if dim != embodiment.dof:
            raise CheckpointError(
                f"{kind} dimension mismatch: tag {norm_tag!r} in {source} has {kind} dim {dim} but "
                f"embodiment {embodiment.name!r} has {embodiment.dof} joints"
            )
    horizon = meta.get("action_horizon")
    if horizon is not None and n_action_steps > int(horizon):
        raise CheckpointError(
            f"n_action_steps {n_action_steps} exceeds the action_horizon {int(horizon)} of tag {norm_tag!r} "
            f"in {source}; lower chunk.n_action_steps"
        )
    if cameras is not None and list(cameras) != list(embodiment.camera_names):
        # Order is what matters (images go in camera_keys order); names often differ only in prefix.
        log.info("camera keys of tag %r are %s; sending embodiment cameras %s in that order",
                 norm_tag, list(cameras), embodiment.camera_names)
    return meta


def check_local_checkpoint(
    directory: Path, embodiment: EmbodimentConfig, norm_tag: str, n_action_steps: int
) -> dict[str, Any]:
    """Every check that needs no torch: files present, remote code present, tag and shapes match."""
    hint = (
        f"build one with `molmoact2-ros make-tiny-checkpoint {directory} --embodiment {embodiment.name}` "
        "or pass a Hugging Face id"
    )
    if not directory.exists():
        raise CheckpointError(f"checkpoint directory {directory} not found; {hint}")
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} is a file, not a checkpoint directory; {hint}")
    stats_path = directory / NORM_STATS_FILE
    if not stats_path.is_file():
        raise CheckpointError(
            f"{stats_path} is missing: a MolmoAct2 checkpoint needs its norm stats beside the weights "
            "(copy norm_stats.json from the checkpoint's release)"
        )
    payload = _read_json(stats_path)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} is missing; {directory} is not a Hugging Face model directory")
    config = _read_json(config_path)
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict) or "AutoModelForImageTextToText" not in auto_map:
        raise CheckpointError(
            f"{config_path} has no auto_map entry for AutoModelForImageTextToText; MolmoAct2 loads "
            "through its remote code (re-download the snapshot or rebuild the checkpoint)"
        )
    _check_remote_code(directory, auto_map, config_path)
    processor_path = directory / "processor_config.json"
    if processor_path.is_file():
        processor_map = _read_json(processor_path).get("auto_map") or {}
        _check_remote_code(directory, processor_map, processor_path)
    return check_norm_stats(payload, str(stats_path), embodiment, norm_tag, n_action_steps)


def check_checkpoint(
    checkpoint: str | Path,
    embodiment: EmbodimentConfig,
    *,
    norm_tag: str | None = None,
    n_action_steps: int | None = None,
) -> dict[str, Any]:
    """Check a checkpoint against an embodiment without torch; return the norm tag's metadata.

    A local directory is checked file by file; for a Hugging Face id only ``norm_stats.json`` is fetched,
    so a wrong id or tag fails before gigabytes download. Raises CheckpointError with one actionable line.
    """
    tag = norm_tag or embodiment.policy.norm_tag
    steps = int(n_action_steps or embodiment.chunk.n_action_steps)
    if is_hub_id(checkpoint):
        return _check_hub_checkpoint(str(checkpoint), embodiment, tag, steps)
    return check_local_checkpoint(Path(checkpoint).expanduser().absolute(), embodiment, tag, steps)


def _check_hub_checkpoint(
    repo_id: str, embodiment: EmbodimentConfig, norm_tag: str, n_action_steps: int
) -> dict[str, Any]:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ConfigError(f"checking {repo_id!r} on the Hugging Face Hub needs huggingface_hub, missing on this "
                          f"host ({exc}); {POLICY_EXTRA_HINT}") from exc
    try:
        path = hf_hub_download(repo_id, NORM_STATS_FILE, repo_type="model")
    except Exception as exc:  # hub errors come in many types (HTTP, offline, not found, auth)
        raise CheckpointError(
            f"cannot fetch {NORM_STATS_FILE} of {repo_id!r} from the Hugging Face Hub ({_first_line(exc)}); "
            "check the id, the network and HF_TOKEN, or pass a local checkpoint directory"
        ) from exc
    payload = _read_json(Path(path))
    return check_norm_stats(payload, f"{repo_id}/{NORM_STATS_FILE}", embodiment, norm_tag, n_action_steps)


def _check_remote_code(directory: Path, auto_map: dict[str, Any], source: Path) -> None:
    """The module files ``auto_map`` names, and the files they import relatively, must all be there."""
    pending = []
    for ref in auto_map.values():
        for item in ref if isinstance(ref, list) else [ref]:
            if isinstance(item, str) and "--" not in item:  # "repo--module.Class" lives in another repo
                pending.append(item.rsplit(".", 1)[0])
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        module_file = directory / f"{module}.py"
        if not module_file.is_file():
            raise CheckpointError(
                f"remote code file {module_file} (needed through {source.name}) is missing; "
                "copy the .py files of the checkpoint's release into the directory"
            )
        pending.extend(_RELATIVE_IMPORT.findall(module_file.read_text(errors="replace")))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({_first_line(exc)})") from exc


# The depth-rule probe and its per-call state live in think_fast_path; these names stay importable here.
_depth_call = depth_call
_DepthMaskProbe = DepthMaskProbe


def load_action_tokenizer(directory: str | Path) -> Any:
    """The FAST action tokenizer (``allenai/MolmoAct2-FAST-Tokenizer`` snapshot) for discrete mode.

    Only local directories: a hub id would make the remote code download at configure time.
    """
    path = Path(directory).expanduser()
    if not str(directory) or not path.is_dir():
        raise ConfigError(
            f"FAST tokenizer directory {str(directory)!r} not found: discrete action mode needs a local "
            "snapshot of allenai/MolmoAct2-FAST-Tokenizer (huggingface-cli download ... --local-dir DIR)"
        )
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(f"{path} has no tokenizer.json: not a FAST action tokenizer snapshot")
    try:
        # LeRobot ships the tokenizer class with MolmoAct2's remote code; it is only needed here.
        from lerobot.policies.molmoact2.molmoact2_hf_model.action_tokenizer import UniversalActionProcessor

        return UniversalActionProcessor.from_pretrained_local(str(path))
    except Exception as exc:  # ImportError, tokenizers/transformers errors, bad JSON
        raise CheckpointError(f"cannot load the FAST action tokenizer from {path}: {_first_line(exc)}") from exc


def _own_cache(cache: dict[str, Any] | None) -> dict[str, Any] | None:
    """The model keeps a reference to the caller's first image; camera backends may reuse that buffer."""
    if not cache or cache.get("image") is None:
        return cache
    return {**cache, "image": np.array(cache["image"], copy=True)}


class MolmoAct2Runtime:
    """A loaded MolmoAct2 model bound to one embodiment.

    ``checkpoint`` is a local snapshot directory or a Hugging Face id (remote code from the hub is
    trusted: MolmoAct2 only exists as remote code). ``n_action_steps`` defaults to the embodiment's
    ``chunk.n_action_steps``; ``seed`` seeds the flow-matching noise so a fresh runtime repeats its
    sequence of chunks. One inference runs at a time (CUDA graphs are not re-entrant).
    ``think_fast_path`` (default on; an attribute, switchable between calls): Think calls take the depth
    rule computed on a worker thread and a memoised attention bias (:mod:`think_fast_path`), with outputs
    identical to the remote code run as shipped (off; the equivalence test compares the two).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        embodiment: EmbodimentConfig,
        *,
        norm_tag: str | None = None,
        device: str = "cpu",
        dtype: str = "fp32",
        num_steps: int | None = None,
        n_action_steps: int | None = None,
        enable_cuda_graph: bool = True,
        seed: int | None = None,
        action_mode: str = "continuous",
        action_tokenizer_dir: str | Path | None = None,
        think_fast_path: bool = True,
    ) -> None:
        require_policy_extra()
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"action mode {action_mode!r} is not allowed: use one of {', '.join(ACTION_MODES)}")
        if dtype not in DTYPES:
            raise ConfigError(f"policy dtype {dtype!r} is not allowed: use one of {', '.join(DTYPES)}")
        if num_steps is not None and num_steps < 1:
            raise ConfigError(f"num_steps {num_steps} is not allowed: use an integer >= 1 (default 10)")
        self.embodiment = embodiment
        self.norm_tag = norm_tag or embodiment.policy.norm_tag
        self.n_action_steps = int(n_action_steps or embodiment.chunk.n_action_steps)
        if self.n_action_steps < 1:
            raise ConfigError(f"n_action_steps {self.n_action_steps} is not allowed: use an integer >= 1")
        self.num_steps = num_steps
        self.enable_cuda_graph = bool(enable_cuda_graph)
        self.seed = seed
        self.action_mode = action_mode
        self.think_fast_path = bool(think_fast_path)
        self._rule_worker: Any = None  # a one-thread pool, started by the first Think call that uses it
        self.checkpoint = str(checkpoint)
        self.is_local = not is_hub_id(checkpoint)
        self._lock = threading.Lock()

        self.tag_metadata = check_checkpoint(
            checkpoint, embodiment, norm_tag=self.norm_tag, n_action_steps=self.n_action_steps
        )
        self._source = str(Path(checkpoint).expanduser().absolute()) if self.is_local else self.checkpoint

        import torch  # heavy: only once the checkpoint looks right

        self._torch = torch
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ConfigError(f"device {device!r} is not allowed: use 'cpu', 'cuda' or 'cuda:N'") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but torch sees no CUDA device; use device='cpu'")
        self.torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        self._action_tokenizer: Any = None
        if action_mode == "discrete":
            # Before the weights: a missing tokenizer should fail in milliseconds.
            self._action_tokenizer = load_action_tokenizer(action_tokenizer_dir or "")
        self._processor, self._model = self._load()
        checkpoint_mode = getattr(self._model.config, "action_mode", "continuous")
        if action_mode == "discrete" and checkpoint_mode not in _DISCRETE_CAPABLE:
            raise CheckpointError(
                f"checkpoint {self._source} has action_mode {checkpoint_mode!r}: it cannot decode discrete "
                "actions; use action_mode 'continuous'"
            )
        self.supports_depth_reasoning = bool(getattr(self._model.config, "enable_depth_reasoning", False))
        self._generator: Any = None
        if seed is not None:
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(int(seed))
        # The remote code's own depth-buffer rule, used to report how many cells a call re-predicts.
        remote_module = sys.modules.get(type(self._model).__module__)
        self._depth_probe = DepthMaskProbe.install(remote_module) if self.supports_depth_reasoning else None
        self._depth_update_mask = getattr(remote_module, "_compute_depth_update_mask", None)
        self._bias_memo = BiasMemo.install(self._model) if self.supports_depth_reasoning else None

    # ---- loading -------------------------------------------------------------------------
    def _load(self) -> tuple[Any, Any]:
        ensure_writable_module_cache()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        # Always the Auto classes: importing the model class and calling its from_pretrained silently
        # re-initialises about half of the weights (transformers 5.5, MOLMOACT2.md).
        kwargs: dict[str, Any] = {"trust_remote_code": True}
        if self.is_local:
            kwargs["local_files_only"] = True
        started = time.perf_counter()
        try:
            with hub_offline() if self.is_local else contextlib.nullcontext(), quiet_remote_code_warnings():
                processor = AutoProcessor.from_pretrained(self._source, extra_special_tokens={}, **kwargs)
                model = AutoModelForImageTextToText.from_pretrained(
                    self._source, dtype=self.torch_dtype, **kwargs
                )
        except Exception as exc:  # transformers raises OSError, ValueError, ImportError, hub errors, ...
            raise CheckpointError(
                f"failed to load MolmoAct2 checkpoint {self._source}: {_first_line(exc)}"
            ) from exc
        model.to(self.device)
        model.eval()
        log.info("loaded %s (%s, %s) in %.1f s", self._source, self.device, self.torch_dtype,
                 time.perf_counter() - started)
        return processor, model

    # ---- inference -----------------------------------------------------------------------
    def _model_inputs(self, obs: Observation) -> tuple[list[np.ndarray], np.ndarray]:
        """Validate an observation; return images in camera order and the state in model space."""
        missing = [name for name in self.embodiment.camera_names if name not in obs.images]
        if missing:
            raise ObservationError(
                f"observation has no image from camera(s) {missing}; got {sorted(obs.images)}, "
                f"the embodiment needs {self.embodiment.camera_names}"
            )
        images = []
        for name in self.embodiment.camera_names:
            image = obs.images[name]
            is_array = isinstance(image, np.ndarray)
            if not is_array or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                desc = f"{image.dtype} array of shape {image.shape}" if is_array else type(image).__name__
                raise ObservationError(f"camera {name!r}: expected an HxWx3 uint8 RGB image, got {desc}")
            if image.shape[0] == 0 or image.shape[1] == 0:
                raise ObservationError(f"camera {name!r}: image is empty ({image.shape})")
            images.append(image)
        state = np.asarray(obs.state, dtype=np.float64)
        if state.shape != (self.embodiment.dof,):
            raise ObservationError(
                f"state has shape {state.shape}; embodiment {self.embodiment.name!r} needs "
                f"({self.embodiment.dof},) in joint order {self.embodiment.joint_names}"
            )
        if not np.all(np.isfinite(state)):
            bad = [n for n, v in zip(self.embodiment.joint_names, state, strict=True) if not np.isfinite(v)]
            raise ObservationError(f"state is not finite for joint(s) {bad}")
        if not isinstance(obs.instruction, str) or not obs.instruction.strip():
            raise ObservationError("instruction is empty: publish the task on /molmoact2/instruction")
        return images, self.embodiment.robot_to_model(state)

    def predict(
        self,
        obs: Observation,
        *,
        enable_depth_reasoning: bool = False,
        depth_cache: dict[str, Any] | None = None,
    ) -> tuple[ActionChunk, dict[str, Any]]:
        """Run one inference. Returns the chunk (robot space, ``n_action_steps`` steps) and an info dict.

        info: ``latency_s`` (whole call), and with depth reasoning ``depth_bins`` (int64[100]),
        ``depth_cache`` (pass it to the next call; None resets the buffer; its image is the first camera's
        frame resized to the depth grid, which gives the model's rule the same result as the full frame),
        ``depth_cells_repredicted`` and ``depth_repredicted_fraction``.
        """
        if self._model is None:
            raise RuntimeError("MolmoAct2Runtime is closed")
        if enable_depth_reasoning and not self.supports_depth_reasoning:
            raise CheckpointError(
                f"checkpoint {self._source} has no depth reasoning (not a Think variant); "
                "turn depth reasoning off or use a Think checkpoint such as allenai/MolmoAct2-Think"
            )
        images, state = self._model_inputs(obs)
        torch = self._torch
        started = time.perf_counter()
        probed = enable_depth_reasoning and self._depth_probe is not None
        with self._lock, torch.inference_mode():
            repredicted = None
            small_image = None
            depth_call.fast = bool(enable_depth_reasoning and self.think_fast_path)
            depth_call.early = None
            if probed:
                depth_call.mask = depth_call.small_image = None
                if depth_call.fast:
                    depth_call.early = self._start_depth_rule(images[0], depth_cache)
            elif enable_depth_reasoning:
                repredicted = self._cells_to_repredict(images[0], depth_cache)
            try:
                out = self._model.predict_action(
                    processor=self._processor,
                    images=images,
                    task=obs.instruction,
                    state=state,
                    norm_tag=self.norm_tag,
                    inference_action_mode=self.action_mode,
                    action_tokenizer=self._action_tokenizer,
                    enable_depth_reasoning=bool(enable_depth_reasoning),
                    depth_cache=depth_cache if enable_depth_reasoning else None,
                    num_steps=self.num_steps,
                    n_action_steps=self.n_action_steps,
                    generator=self._generator,
                    enable_cuda_graph=self.enable_cuda_graph,
                )
            except Exception as exc:  # remote code raises RuntimeError/ValueError; torch adds OOM and more
                raise InferenceError(f"MolmoAct2 inference failed: {_first_line(exc)}") from exc
            finally:
                depth_call.early = None  # unused when the model did not ask (no usable cache)
                depth_call.fast = False
            actions = out.actions.detach().to(device="cpu", dtype=torch.float32).numpy()
            if probed:
                # No mask recorded: the model had no usable cache and predicted every cell.
                mask = depth_call.mask
                repredicted = self.num_depth_codes if mask is None else int(np.count_nonzero(mask))
                small_image = depth_call.small_image
        expected = (1, self.n_action_steps, self.embodiment.dof)
        if actions.shape != expected:
            raise InferenceError(f"model returned actions of shape {actions.shape}, expected {expected}")
        chunk = ActionChunk(
            joint_names=list(self.embodiment.joint_names),
            positions=self.embodiment.model_to_robot(actions[0].astype(np.float64)),
            stamp_s=obs.stamp_s,
            rate_hz=self.embodiment.control_rate_hz,
        )
        info: dict[str, Any] = {"latency_s": time.perf_counter() - started}
        if enable_depth_reasoning:
            bins = out.depth_bins
            info["depth_bins"] = (
                None if bins is None else bins.detach().cpu().reshape(-1).numpy().astype(np.int64)
            )
            cache = out.depth_cache
            if probed and cache is not None and cache.get("image") is not None:
                if small_image is None:  # first call of a buffer: the rule did not run
                    small_image = self._depth_probe.resize(np.asarray(cache["image"]), self._depth_grid_px)
                cache = {**cache, "image": small_image}
            info["depth_cache"] = _own_cache(cache)
            if repredicted is not None:
                info["depth_cells_repredicted"] = int(repredicted)
                info["depth_repredicted_fraction"] = float(repredicted) / self.num_depth_codes
        return chunk, info

    @property
    def num_depth_codes(self) -> int:
        return int(getattr(self._model.config, "num_depth_codes", 100) or 100)

    @property
    def _depth_grid_px(self) -> int:
        assert self._depth_probe is not None
        return math.isqrt(self.num_depth_codes) * self._depth_probe.patch_size

    def _usable_cache(self, depth_cache: dict[str, Any] | None) -> bool:
        """Whether the model will run its rule on this cache (else it re-predicts every cell)."""
        if not depth_cache or depth_cache.get("image") is None or depth_cache.get("depth_bins") is None:
            return False
        return np.asarray(depth_cache["depth_bins"]).reshape(-1).shape[0] == self.num_depth_codes

    def _start_depth_rule(self, first_image: np.ndarray, depth_cache: dict[str, Any] | None) -> EarlyRule | None:
        """Start the model's depth rule for this call on the worker thread, with the arrays the model will
        pass it (the first image as is; the cached image through the model's own conversion)."""
        probe = self._depth_probe
        if probe is None or probe.normalize is None or not self._usable_cache(depth_cache):
            return None
        assert depth_cache is not None
        if self._rule_worker is None:
            from concurrent.futures import ThreadPoolExecutor

            self._rule_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="depth-rule")
        previous = probe.normalize(depth_cache["image"])
        n = self.num_depth_codes
        future = self._rule_worker.submit(probe.compute, first_image, previous, n)
        return EarlyRule(future=future, current=first_image, previous=previous, num_depth_codes=n)

    def _cells_to_repredict(self, first_image: np.ndarray, depth_cache: dict[str, Any] | None) -> int | None:
        """How many depth cells this call predicts afresh (the rest replay the cache); None if unknown."""
        n = self.num_depth_codes
        if not depth_cache or depth_cache.get("image") is None or depth_cache.get("depth_bins") is None:
            return n
        if np.asarray(depth_cache["depth_bins"]).reshape(-1).shape[0] != n:
            return n  # the model ignores a cache of the wrong size
        if self._depth_update_mask is None:
            return None
        mask = self._depth_update_mask(first_image, np.asarray(depth_cache["image"]), num_depth_codes=n)
        return int(np.count_nonzero(mask))

    def warmup(self, *, enable_depth_reasoning: bool = False) -> float:
        """One inference on a synthetic observation (first-call costs, CUDA graphs); returns seconds."""
        cameras = {c.name: c for c in self.embodiment.cameras}
        obs = Observation(
            images={n: np.full((cameras[n].height, cameras[n].width, 3), 127, np.uint8) for n in cameras},
            state=self.embodiment.home,
            instruction="warm up",
            stamp_s=0.0,
        )
        started = time.perf_counter()
        self.predict(obs, enable_depth_reasoning=enable_depth_reasoning and self.supports_depth_reasoning)
        return time.perf_counter() - started

    def close(self, collect: bool = True) -> None:
        """Release the model (and GPU memory). The runtime cannot predict afterwards. ``collect=False`` skips
        the garbage collection (a second or more with transformers loaded) when the process is exiting anyway."""
        with self._lock:
            self._model = None
            self._processor = None
            if self._bias_memo is not None:
                self._bias_memo.clear()
            if self._rule_worker is not None:
                self._rule_worker.shutdown(wait=True)
                self._rule_worker = None
        if not collect:
            return
        gc.collect()
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def __enter__(self) -> MolmoAct2Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
