"""Tiny MolmoAct2 checkpoints built offline from the real remote code, for tests and the demo.

Real MolmoAct2 weights (about 5B parameters) cannot be downloaded everywhere we test. A tiny checkpoint
holds the same files a Hugging Face snapshot does (remote code, ``config.json`` with ``auto_map``,
``model.safetensors``, processor and tokenizer files, ``norm_stats.json``), so loading it through
``AutoModelForImageTextToText`` and calling ``predict_action`` runs the whole real code path in tens of
milliseconds on a CPU.

The model code comes from the MolmoAct2 remote code that LeRobot ships; nothing is re-implemented here.
Weights are drawn from ``seed`` by the model's own initialisation, then set on purpose where it matters:

- a circuit through the vision encoder, the LLM and the flow-matching action expert
  (:mod:`tiny_circuit`) makes ``predict_action`` return the scripted motions of :mod:`tiny_motion`:
  each chunk starts at the state the prompt carries and moves smoothly along a limit-cycle vector field
  of that state, shifted by the images' colours, within the limits and the velocity budget. Pure noise
  (what random weights return) would be rejected by any driver; a chunk that only held the home pose
  would never show a wrong sign or offset;
- with ``think=True``, the LM head emits ``<depth_end>`` after the depth codes (:func:`_bias_depth_end`);
  a random model never does and depth reasoning would fail.

The remaining weights stay random and are cut off from the circuit; they only shape the depth codes.

Norm stats are derived from the embodiment's joint limits in *model* space, so un-normalised actions
stay inside the limits.

Builds are atomic: everything is written into a temporary sibling directory that is renamed into place
at the end, so a crashed build never leaves a directory that looks like a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from molmoact2_ros.backends.policy import tiny_circuit
from molmoact2_ros.backends.policy.hf_env import cache_root as _cache_root
from molmoact2_ros.backends.policy.hf_env import ensure_writable_module_cache, quiet_remote_code_warnings
from molmoact2_ros.backends.policy.model_sizes import TINY, ModelSizes
from molmoact2_ros.backends.policy.tiny_motion import MotionDesign
from molmoact2_ros.backends.policy.tiny_tokenizer import (
    EOS_TOKEN,
    NUM_ACTION_TOKENS,
    NUM_DEPTH_TOKENS,
    NUM_STATE_TOKENS,
    build_tokenizer_files,
)
from molmoact2_ros.core.embodiment import EmbodimentConfig
from molmoact2_ros.core.errors import CheckpointError

log = logging.getLogger(__name__)

# Bump when the files a build writes change, so cached checkpoints are rebuilt.
BUILDER_VERSION = 2

# Where LeRobot keeps MolmoAct2's Hugging Face remote code, relative to the lerobot package.
_REMOTE_CODE_SUBDIR = ("policies", "molmoact2", "molmoact2_hf_model")
REMOTE_CODE_FILES = (
    "configuration_molmoact2.py",
    "modeling_molmoact2.py",
    "processing_molmoact2.py",
    "image_processing_molmoact2.py",
    "video_processing_molmoact2.py",
    "inference.py",
    "action_tokenizer.py",
)
MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_molmoact2.MolmoAct2Config",
    "AutoModelForImageTextToText": "modeling_molmoact2.MolmoAct2ForConditionalGeneration",
}
PROCESSOR_AUTO_MAP = {
    "AutoProcessor": "processing_molmoact2.MolmoAct2Processor",
    "AutoImageProcessor": "image_processing_molmoact2.MolmoAct2ImageProcessor",
    "AutoVideoProcessor": "video_processing_molmoact2.MolmoAct2VideoProcessor",
}
NORM_STATS_FORMAT = "molmoact2_norm_stats.v1"
MANIFEST_NAME = "tiny_checkpoint.json"

# Model sizes: model_sizes.TINY (see MOLMOACT2.md, "Building a tiny checkpoint offline").
_MAX_ACTION_DIM = 32
_MIN_ACTION_HORIZON = 30
_NUM_DEPTH_CODES = 100  # must be a square: the depth buffer is a 10x10 grid
_ADDITIONAL_VOCAB = 128
# Think variant: the <depth_end> logit gain; the constant feature lives in the last residual dimension.
_DEPTH_END_GAIN = 10.0


def _depth_end_dim(sizes: ModelSizes) -> int:
    return sizes.text_hidden - 1


# ---- remote code ---------------------------------------------------------------------------

def remote_code_dir() -> Path:
    """The installed LeRobot's copy of MolmoAct2's remote code (found without importing lerobot.policies)."""
    spec = importlib.util.find_spec("lerobot")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "MolmoAct2 remote code not found: install the policy extra (pip install 'lerobot>=0.6.1')"
        )
    for base in spec.submodule_search_locations:
        candidate = Path(base).joinpath(*_REMOTE_CODE_SUBDIR)
        if all((candidate / name).is_file() for name in REMOTE_CODE_FILES):
            return candidate
    raise CheckpointError(
        f"the installed lerobot has no MolmoAct2 remote code under {'/'.join(_REMOTE_CODE_SUBDIR)}: "
        "upgrade to lerobot>=0.6.1"
    )


@lru_cache(maxsize=1)
def _remote_modules() -> tuple[ModuleType, ModuleType]:
    """Import the remote code as a private package, the way transformers would, without its module cache.

    Importing it through ``lerobot.policies`` would pull in all of LeRobot (seconds); loading it through
    transformers' dynamic modules would leave a module-cache entry per temporary build directory.
    """
    pkg_name = "_molmoact2_ros_tiny_remote_code"
    pkg_spec = importlib.util.spec_from_loader(pkg_name, loader=None, is_package=True)
    assert pkg_spec is not None and pkg_spec.submodule_search_locations is not None
    pkg_spec.submodule_search_locations.append(str(remote_code_dir()))
    sys.modules[pkg_name] = importlib.util.module_from_spec(pkg_spec)
    configuration = importlib.import_module(f"{pkg_name}.configuration_molmoact2")
    modeling = importlib.import_module(f"{pkg_name}.modeling_molmoact2")
    return configuration, modeling


def _remote_code_digest() -> str:
    digest = hashlib.sha256()
    src = remote_code_dir()
    for name in REMOTE_CODE_FILES:
        digest.update(name.encode())
        digest.update((src / name).read_bytes())
    return digest.hexdigest()


# ---- norm stats ----------------------------------------------------------------------------

def norm_stats_for(embodiment: EmbodimentConfig) -> dict[str, Any]:
    """``norm_stats.json`` content for one embodiment, with stats spanning its joint limits in model space.

    q01/q99 are the model-space limits, so normalised values in [-1, 1] (the model clips to that range)
    map back inside the joint envelope.
    """
    low, high = embodiment.model_limits()
    stats = {
        "q01": low.tolist(),
        "q99": high.tolist(),
        "min": low.tolist(),
        "max": high.tolist(),
        "mean": ((low + high) / 2.0).tolist(),
        "std": ((high - low) / np.sqrt(12.0)).tolist(),  # a uniform distribution over the range
        "mask": [True] * embodiment.dof,
        "names": list(embodiment.joint_names),
    }
    metadata = {
        "action_stats": stats,
        "state_stats": json.loads(json.dumps(stats)),  # an independent copy
        "setup_type": embodiment.policy.setup_type or embodiment.name.replace("_", " "),
        "control_mode": embodiment.policy.control_mode,
        "action_horizon": embodiment.chunk.action_horizon,
        "n_action_steps": embodiment.chunk.n_action_steps,
        "camera_keys": list(embodiment.camera_names),
        "normalize_gripper": True,
    }
    return {
        "format": NORM_STATS_FORMAT,
        "norm_mode": "q01_q99",
        "metadata_by_tag": {embodiment.policy.norm_tag: metadata},
    }


# ---- config --------------------------------------------------------------------------------

def _max_action_horizon(embodiment: EmbodimentConfig) -> int:
    return max(_MIN_ACTION_HORIZON, embodiment.chunk.action_horizon)


def _model_config_kwargs(
    embodiment: EmbodimentConfig, token_ids: dict[str, int], vocab_size: int, think: bool,
    sizes: ModelSizes = TINY,
) -> dict[str, Any]:
    patches = sizes.image_size // sizes.patch_size
    # The circuit's options are real config options; a model without the circuit keeps the defaults.
    expert_extra = tiny_circuit.action_expert_overrides() if sizes.circuit else {}
    model_extra = tiny_circuit.config_overrides() if sizes.circuit else {}
    return {
        "text_config": {
            "hidden_size": sizes.text_hidden,
            "num_attention_heads": sizes.text_heads,
            "num_key_value_heads": sizes.text_kv_heads,
            "head_dim": sizes.text_head_dim,
            "vocab_size": vocab_size,
            "additional_vocab_size": _ADDITIONAL_VOCAB,
            "qkv_bias": True,
            "num_hidden_layers": sizes.text_layers,
            "intermediate_size": sizes.text_intermediate,
            "max_position_embeddings": sizes.max_position_embeddings,
            "rope_theta": 1000000.0,
            "use_qk_norm": True,
            "qk_norm_type": "qwen3",
            "tie_word_embeddings": False,
        },
        "vit_config": {
            "hidden_size": sizes.vit_hidden,
            "intermediate_size": sizes.vit_intermediate,
            "num_hidden_layers": sizes.vit_layers,
            "num_attention_heads": sizes.vit_heads,
            "num_key_value_heads": sizes.vit_heads,
            "head_dim": sizes.vit_head_dim,
            "image_default_input_size": [sizes.image_size, sizes.image_size],
            "image_patch_size": sizes.patch_size,
            "image_num_pos": patches * patches,  # no class token
        },
        "adapter_config": {
            "vit_layers": list(sizes.adapter_vit_layers),
            "hidden_size": sizes.vit_hidden,
            "num_attention_heads": sizes.adapter_heads,
            "num_key_value_heads": sizes.adapter_heads,
            "head_dim": sizes.adapter_head_dim,
            "intermediate_size": sizes.adapter_intermediate,
            "text_hidden_size": sizes.text_hidden,
        },
        "action_expert_config": {
            "hidden_size": sizes.expert_hidden,
            "num_layers": sizes.text_layers,
            "num_heads": sizes.expert_heads,
            "ffn_multiple_of": sizes.expert_ffn_multiple_of,
            "timestep_embed_dim": sizes.expert_timestep_dim,
            **expert_extra,
        },
        "max_action_dim": _MAX_ACTION_DIM,
        "max_action_horizon": _max_action_horizon(embodiment),
        "n_obs_steps": 1,  # the default (30) would slice the chunk from step 29
        "action_mode": "both",
        "state_format": "discrete",
        "enable_depth_reasoning": bool(think),
        "num_depth_codes": _NUM_DEPTH_CODES,
        **model_extra,
        "image_start_token_id": token_ids["<im_start>"],
        "low_res_image_start_token_id": token_ids["<low_res_im_start>"],
        "image_end_token_id": token_ids["<im_end>"],
        "image_low_res_id": token_ids["<im_low>"],
        "image_patch_id": token_ids["<im_patch>"],
        "image_col_id": token_ids["<im_col>"],
        "frame_start_token_id": token_ids["<frame_start>"],
        "frame_end_token_id": token_ids["<frame_end>"],
        "action_output_token_id": token_ids["<action_output>"],
        "action_start_token_id": token_ids["<action_start>"],
        "action_end_token_id": token_ids["<action_end>"],
        "action_token_start_id": token_ids["<action_0>"],
        "num_action_tokens": NUM_ACTION_TOKENS,
        "depth_output_token_id": token_ids["<depth_output>"],
        "depth_start_token_id": token_ids["<depth_start>"],
        "depth_end_token_id": token_ids["<depth_end>"],
        "depth_token_start_id": token_ids["<depth_0>"],
        "num_depth_tokens": NUM_DEPTH_TOKENS,
        "state_start_token_id": token_ids["<state_start>"],
        "state_end_token_id": token_ids["<state_end>"],
        "state_token_start_id": token_ids["<state_0>"],
        "num_state_tokens": NUM_STATE_TOKENS,
        "eos_token_id": token_ids[EOS_TOKEN],
        "pad_token_id": token_ids[EOS_TOKEN],
    }


def _processor_config(sizes: ModelSizes = TINY) -> dict[str, Any]:
    image_size = {"height": sizes.image_size, "width": sizes.image_size}
    common = {
        "size": image_size,
        "patch_size": sizes.patch_size,
        "pooling_size": [2, 2],
        "image_mean": [0.5, 0.5, 0.5],  # the vision backbone assumes pixels normalised to [-1, 1]
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "auto_map": dict(PROCESSOR_AUTO_MAP),
    }
    return {
        "processor_class": "MolmoAct2Processor",
        "auto_map": dict(PROCESSOR_AUTO_MAP),
        "image_use_col_tokens": True,
        "use_single_crop_col_tokens": False,
        "use_single_crop_start_token": True,
        "video_use_col_tokens": False,
        "use_frame_special_tokens": True,
        "image_processor": {
            **common,
            "image_processor_type": "MolmoAct2ImageProcessor",
            "max_crops": sizes.max_crops,
            "overlap_margins": list(sizes.overlap_margins),
            "crop_mode": "overlap-and-resize-c2",
        },
        "video_processor": {**common, "video_processor_type": "MolmoAct2VideoProcessor"},
    }


# ---- weights -------------------------------------------------------------------------------

def motion_design(embodiment: EmbodimentConfig) -> MotionDesign:
    """The scripted motion family a tiny checkpoint for ``embodiment`` computes (see :mod:`tiny_motion`)."""
    design = MotionDesign.for_embodiment(embodiment, embodiment.chunk.action_horizon)
    # An embodiment wider than the tiny model drops cycle pairs (those joints hold) rather than fail.
    pairs = design.pairs
    while pairs and not tiny_circuit.fits(design.dof, len(pairs)):
        pairs = pairs[:-1]
    if not tiny_circuit.fits(design.dof, len(pairs)):
        raise CheckpointError(
            f"embodiment {embodiment.name!r} has {design.dof} joints: too many for a tiny checkpoint"
        )
    return dataclasses.replace(design, pairs=pairs)


def _bias_depth_end(state: dict[str, Any], config: Any, d: int) -> None:
    """Make ``<depth_end>`` the LM head's choice after the depth codes, so Think inference terminates.

    A random model never emits ``<depth_end>`` and depth reasoning fails after its step budget. One
    residual dimension is made a constant feature: every token embedding is 1 there and nothing writes to
    it (the output rows of attention, MLP and image projector are 0), so after the final norm it is a
    positive constant. Only the ``<depth_end>`` row of the LM head reads it. Depth codes are chosen among
    the depth-code rows alone, so they stay random; the full-vocabulary argmax after them picks
    ``<depth_end>``. ``d``: the residual dimension of the constant feature.
    """
    state["model.transformer.wte.embedding"][:, d] = 1.0
    state["model.transformer.wte.new_embedding"][:, d] = 1.0
    for i in range(config.text_config.num_hidden_layers):
        state[f"model.transformer.blocks.{i}.self_attn.attn_out.weight"][d, :] = 0.0
        state[f"model.transformer.blocks.{i}.mlp.ff_out.weight"][d, :] = 0.0
    state["model.vision_backbone.image_projector.w2.weight"][d, :] = 0.0
    lm_head = state["lm_head.weight"]
    lm_head[:, d] = 0.0
    lm_head[config.depth_end_token_id, :] = 0.0
    lm_head[config.depth_end_token_id, d] = _DEPTH_END_GAIN


def _write_weights(
    out_dir: Path, config_kwargs: dict[str, Any], embodiment: EmbodimentConfig, think: bool, seed: int,
    sizes: ModelSizes = TINY, weights_dtype: str = "float32", build_device: str = "cpu",
) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    configuration, modeling = _remote_modules()
    with quiet_remote_code_warnings():
        config = configuration.MolmoAct2Config(**config_kwargs)
    device = torch.device(build_device)
    dtype = getattr(torch, weights_dtype)
    # fork_rng: seed only this construction, leave the caller's global RNG streams untouched. A real-size
    # model is built on the GPU: its random initialisation takes minutes on a CPU, about a second there.
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), device:
        torch.manual_seed(seed)
        model = modeling.MolmoAct2ForConditionalGeneration(config)
    state = {
        name: t.detach().to(device="cpu", dtype=dtype).contiguous().clone() for name, t in model.state_dict().items()
    }
    del model
    if sizes.circuit:
        design = motion_design(embodiment)
        tiny_circuit.apply(state, config, design, _depth_end_dim(sizes))
    if think:
        _bias_depth_end(state, config, _depth_end_dim(sizes))
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    config_dict = config.to_dict()
    config_dict.pop("transformers_version", None)  # keep config.json identical across library patches
    config_dict["architectures"] = ["MolmoAct2ForConditionalGeneration"]
    config_dict["auto_map"] = dict(MODEL_AUTO_MAP)
    config_dict["dtype"] = weights_dtype
    _write_json(out_dir / "config.json", config_dict)
    return config_dict


# ---- build ---------------------------------------------------------------------------------

def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _finalise_tree(root: Path) -> None:
    """Readable by everyone (mkdtemp and safetensors create owner-only), and on disk before the rename."""
    os.chmod(root, 0o755)
    for path in sorted(root.iterdir()):
        if path.is_file():
            os.chmod(path, 0o644)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _write_checkpoint(
    out_dir: Path, embodiment: EmbodimentConfig, think: bool, seed: int,
    sizes: ModelSizes = TINY, weights_dtype: str = "float32", build_device: str = "cpu",
) -> None:
    src = remote_code_dir()
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(src / name, out_dir / name)
    token_ids = build_tokenizer_files(out_dir)
    # Every id the config names must be below the text vocab_size (ids above it index new_embedding
    # only, and the LM head has vocab_size rows); round up like real checkpoints do.
    vocab_size = max(sizes.vocab_size, -(-(max(token_ids.values()) + 1) // 64) * 64)
    config_kwargs = _model_config_kwargs(embodiment, token_ids, vocab_size, think, sizes)
    _write_weights(out_dir, config_kwargs, embodiment, think, seed, sizes, weights_dtype, build_device)
    _write_json(out_dir / "processor_config.json", _processor_config(sizes))
    _write_json(out_dir / "norm_stats.json", norm_stats_for(embodiment))
    _write_json(out_dir / "generation_config.json", {"eos_token_id": token_ids[EOS_TOKEN],
                                                     "pad_token_id": token_ids[EOS_TOKEN]})
    manifest = {
        "builder_version": BUILDER_VERSION,
        "embodiment": embodiment.name,
        "norm_tag": embodiment.policy.norm_tag,
        "think": bool(think),
        "seed": int(seed),
        "config_key": config_key(embodiment, think),
        "note": "test checkpoint: scripted motions (molmoact2_ros.backends.policy.tiny_motion), "
                "meaningless for any task; its depth codes mean nothing",
    }
    if sizes is not TINY:
        manifest["sizes"] = sizes.name
        manifest["note"] = "random weights at the sizes named: for timing only, meaningless for any task"
    # Written last: a directory with a manifest is complete (and the rename makes it visible at once).
    _write_json(out_dir / MANIFEST_NAME, manifest)
    _finalise_tree(out_dir)


def build_tiny_checkpoint(
    out_dir: str | os.PathLike[str],
    embodiment: EmbodimentConfig,
    think: bool = False,
    seed: int = 0,
    *,
    overwrite: bool = False,
    sizes: ModelSizes = TINY,
    weights_dtype: str = "float32",
    build_device: str = "cpu",
) -> Path:
    """Write a tiny MolmoAct2 checkpoint for ``embodiment`` to ``out_dir`` and return its path.

    The same seed gives a byte-identical ``model.safetensors`` (on the same torch version). An existing
    non-empty ``out_dir`` is replaced only with ``overwrite=True``.

    ``sizes`` other than :data:`~model_sizes.TINY` (e.g. ``RELEASED``: the released model's sizes) build
    the same files with random weights, no motion circuit (it assumes the tiny widths) and, for
    ``think``, the ``<depth_end>`` bias; ``weights_dtype`` ("float32", "bfloat16") is what the file holds
    and ``build_device`` where the weights are initialised ("cuda" for a real-size model).
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is a file; choose a directory path for the checkpoint")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} already exists and is not empty; choose another directory or overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    ensure_writable_module_cache()
    with _staging_dir(out) as staging:
        _write_checkpoint(staging, embodiment, think, seed, sizes, weights_dtype, build_device)
        _publish(staging, out)
    variant = " (think)" if think else ""
    log.info("built %s MolmoAct2 checkpoint for %s%s at %s", sizes.name, embodiment.name, variant, out)
    return out


@contextlib.contextmanager
def _staging_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` (same filesystem, so the final rename is atomic), removed on failure."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out: Path) -> None:
    """Move a finished build into place; an existing ``out`` is swapped out first and then deleted."""
    retired = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, retired / out.name)
    try:
        os.replace(staging, out)
    except OSError:
        if retired is not None:  # put the previous checkpoint back rather than leave nothing
            os.replace(retired / out.name, out)
            retired.rmdir()
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


# ---- cache ---------------------------------------------------------------------------------

def config_key(embodiment: EmbodimentConfig, think: bool = False) -> str:
    """Short hash of everything a tiny checkpoint depends on besides the seed."""
    low, high = embodiment.model_limits()
    fields = {
        "builder_version": BUILDER_VERSION,
        "remote_code": _remote_code_digest(),
        "think": bool(think),
        "norm_tag": embodiment.policy.norm_tag,
        "setup_type": embodiment.policy.setup_type,
        "control_mode": embodiment.policy.control_mode,
        "joints": embodiment.joint_names,
        "cameras": embodiment.camera_names,
        "limits": [np.round(low, 6).tolist(), np.round(high, 6).tolist()],
        "home": np.round(embodiment.robot_to_model(embodiment.home), 6).tolist(),  # which joints cycle
        "velocities": np.round(embodiment.max_velocity, 6).tolist(),  # the motion's speed budget
        "types": [j.type for j in embodiment.joints],
        "arms": {k: list(v) for k, v in embodiment.arms.items()},
        "rate": embodiment.control_rate_hz,
        "action_horizon": embodiment.chunk.action_horizon,
        "n_action_steps": embodiment.chunk.n_action_steps,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def tiny_checkpoint_path(
    embodiment: EmbodimentConfig,
    think: bool = False,
    seed: int = 0,
    cache_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Where :func:`ensure_tiny_checkpoint` keeps the checkpoint for these arguments."""
    name = f"{embodiment.name}{'-think' if think else ''}-s{int(seed)}-{config_key(embodiment, think)}"
    return _cache_root(cache_root) / "tiny" / name


def is_complete(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def ensure_tiny_checkpoint(
    embodiment: EmbodimentConfig,
    think: bool = False,
    seed: int = 0,
    cache_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Return a cached tiny checkpoint for ``embodiment``, building it on first use.

    Cached under ``cache_root or $MOLMOACT2_ROS_CACHE or ~/.cache/molmoact2_ros`` in
    ``tiny/<name>[-think]-s<seed>-<config hash>``. Safe when several processes call it at once: builds
    are serialised by a file lock and published by an atomic rename.
    """
    ensure_writable_module_cache(cache_root)
    path = tiny_checkpoint_path(embodiment, think, seed, cache_root)
    if is_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.parent / f".{path.name}.lock"):
        if is_complete(path):  # another process built it while we waited
            return path
        # A directory without a manifest was not made by a finished build: replace it.
        build_tiny_checkpoint(path, embodiment, think=think, seed=seed, overwrite=True)
    return path


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps the cache consistent
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
