"""The scripted motion family of the built-in tiny MolmoAct2 checkpoint, in plain numpy.

The tiny checkpoint (:mod:`tiny_checkpoint`) runs the real MolmoAct2 code; its weights are set at build time
(:mod:`tiny_circuit`) so that ``predict_action`` computes exactly the motions defined here. This module is
the specification of those motions and the reference the tests compare the real model against. It needs
neither torch nor transformers.

What the tiny policy does, per call, in the model's normalised action space (``v`` in [-1, 1] per joint,
the q01/q99 range of the norm stats, which the tiny checkpoint sets to the joint limits):

- it reads the state the prompt carries (discretised to 256 bins by the model, so ``v`` is a bin centre)
  and starts the chunk there: step 0 is the state, to within half a bin;
- some revolute joints are paired, two per pair in one arm (:func:`cycle_pairs`); each pair follows a
  smooth vector field ``F`` with a stable limit cycle around a centre near home (a rotation plus a
  radial term that pushes out inside the cycle and pulls back outside, both saturating, so ``F`` is
  bounded everywhere); the image content (mean brightness and warmth of every camera's frame) adds a
  constant to ``F``, which shifts the cycle;
- the chunk moves along ``F`` from the state: ``step k = v + phi_k * tau * F(v, images)``, where
  ``phi_k`` rises smoothly from 0 (a decelerating ramp) and ``tau`` makes the chunk's initial speed
  ``F``; every other joint holds its state.

Executed in a closed loop (each new chunk starts from the measured state), the paired joints keep
circling; speeds stay below a fraction of each joint's velocity limit for every state in the envelope.
The motion is meaningless for any real task: it exists so a demo and the tests can see motion whose
direction depends on the state, the images, and the robot<->model mapping (signs, offsets, scales).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from molmoact2_ros.core.embodiment import EmbodimentConfig

NUM_STATE_BINS = 256  # the model discretises each normalised state value into this many tokens

# The limit cycle, in "d" units: d = (v - CENTER) / RADIUS per joint, v normalised to [-1, 1].
CENTER = -0.08  # off the (mid-range) home of most joints, so a robot at home starts off-centre
RADIUS = 0.15
ROT_SATURATION = 1.5  # the rotation term saturates beyond this |d|
RAD_SATURATION = 1.25  # so does the radial one
GAMMA = 4.0 / 3.0  # radial term d (1 - GAMMA d^2): outward inside the cycle, inward outside
OMEGA = 0.8  # rotation rate, d units per second per unit d
MU = 0.5  # radial gain
# Far outside the cycle (towards the joint limits) the radial term adds an inward wall stronger than any
# rotation, so a chunk never runs into a limit (clipping there would stop it in one step).
WALL = 1.5
WALL_START = 3.5
WALL_WIDTH = 0.5
IMAGE_GAIN = 0.6  # how strongly the image features push the field (d units per second)
IMAGE_CARRIER = 2.0  # per image token, colour (r, g, b) in [-1, 1] is read as (r, g, b) / |(C, r, g, b)|
# Joints whose home is this close (normalised) to CENTER can cycle; the rest hold.
MAX_HOME_OFFSET = 0.35
# Speeds: |F| in robot units per second stays below this fraction of each joint's max_velocity_per_s.
SPEED_FRACTION = 0.25

# Action expert clock (see tiny_circuit): query-key angles in the expert's lowest RoPE frequency pair.
EXPERT_ROPE_BASE = 10000.0
ATTENTION_SCORE_MAX = 4.0  # sqrt(head_dim) for the expert's head_dim 16, with unit-RMS q and k


def rope_lowest_frequency(head_dim: int = 16, base: float = EXPERT_ROPE_BASE) -> float:
    """Angle per position of the slowest RoPE pair (dims head_dim/2 - 1 and head_dim - 1)."""
    half = head_dim // 2
    return float(base ** (-(half - 1) / half))


def _saturate(d: np.ndarray, limit: float) -> np.ndarray:
    return limit * np.tanh(np.asarray(d, dtype=np.float64) / limit)


def rotation_term(d: np.ndarray) -> np.ndarray:
    """S(d): the (saturating) coordinate the rotation reads."""
    return _saturate(d, ROT_SATURATION)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def radial_term(d: np.ndarray) -> np.ndarray:
    """H(d): outward for |d| inside the cycle, inward outside, bounded; a wall towards the limits."""
    d = np.asarray(d, dtype=np.float64)
    s = _saturate(d, RAD_SATURATION)
    wall = _sigmoid((d - WALL_START) / WALL_WIDTH) - _sigmoid((-d - WALL_START) / WALL_WIDTH)
    return s * (1.0 - GAMMA * s * s) - WALL * wall


def bin_values() -> np.ndarray:
    """The normalised value of each state token: the model maps v to round((v + 1) / 2 * 255)."""
    return 2.0 * np.arange(NUM_STATE_BINS, dtype=np.float64) / (NUM_STATE_BINS - 1) - 1.0


def quantize(v: np.ndarray) -> np.ndarray:
    """What the model does to a normalised state before it becomes tokens, and back to a value."""
    arr = np.clip(np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0), -1.0, 1.0)
    k = np.clip(np.rint((arr + 1.0) / 2.0 * (NUM_STATE_BINS - 1)), 0, NUM_STATE_BINS - 1)
    return 2.0 * k / (NUM_STATE_BINS - 1) - 1.0


def bin_features() -> np.ndarray:
    """Per state token (rows): (v, S(d(v)), H(d(v))), the features its embedding carries."""
    v = bin_values()
    d = (v - CENTER) / RADIUS
    return np.stack([v, rotation_term(d), radial_term(d)], axis=1)


def max_field_d() -> float:
    """An upper bound of |F| in d units per second over every state and image."""
    return OMEGA * ROT_SATURATION + MU * float(np.abs(radial_term(np.linspace(-50, 50, 20001))).max()) \
        + IMAGE_GAIN * 1.0


@dataclass(frozen=True)
class CyclePair:
    a: int  # joint indices, in the model's joint order
    b: int


def _arms(emb: EmbodimentConfig) -> list[list[int]]:
    names = emb.joint_names
    if emb.arms:
        return [[names.index(n) for n in members] for members in emb.arms.values()]
    return [list(range(emb.dof))]


def normalised_home(emb: EmbodimentConfig) -> np.ndarray:
    low, high = emb.model_limits()
    return 2.0 * (emb.robot_to_model(emb.home) - low) / (high - low) - 1.0


def cycle_pairs(emb: EmbodimentConfig) -> list[CyclePair]:
    """Revolute joints whose home is near the cycle centre, paired in joint order within each arm."""
    home = normalised_home(emb)
    pairs: list[CyclePair] = []
    for arm in _arms(emb):
        eligible = [j for j in arm
                    if emb.joints[j].type == "revolute" and abs(home[j] - CENTER) <= MAX_HOME_OFFSET]
        pairs += [CyclePair(eligible[i], eligible[i + 1]) for i in range(0, len(eligible) - 1, 2)]
    return pairs


def clock_weights(horizon: int, psi: float) -> np.ndarray:
    """w_k: the weight the expert's clock head gives action position 0, seen from position k.

    Position 0 scores ``4 cos(psi + k theta)`` (theta the slowest RoPE frequency; the query sits at angle
    psi from the key in that pair), every later position 0, so w_k = e^s / (e^s + k).
    """
    theta = rope_lowest_frequency()
    k = np.arange(horizon, dtype=np.float64)
    s = ATTENTION_SCORE_MAX * np.cos(psi + k * theta)
    return np.exp(s) / (np.exp(s) + k)


@dataclass(frozen=True)
class MotionDesign:
    """Every number the tiny checkpoint's motion depends on, for one embodiment."""

    dof: int
    horizon: int  # action positions the expert computes (the tag's action_horizon)
    n_action_steps: int
    rate_hz: float
    pairs: tuple[CyclePair, ...]
    gains: np.ndarray  # per joint, scales F so it respects SPEED_FRACTION of the velocity limit
    clock_ratio: float  # c: the clock head weighs position 0 like c later positions
    clock_psi: float
    tau_s: float  # chunk length scale: the chunk starts at speed F
    model_low: np.ndarray
    model_high: np.ndarray
    affine_gain: np.ndarray  # model = affine_gain * robot + affine_offset
    affine_offset: np.ndarray

    @classmethod
    def for_embodiment(cls, emb: EmbodimentConfig, horizon: int) -> MotionDesign:
        low, high = emb.model_limits()
        gain = np.array([j.sign * j.model_scale for j in emb.joints], dtype=np.float64)
        offset = np.array([j.offset for j in emb.joints], dtype=np.float64)
        half_range = (emb.upper - emb.lower) / 2.0  # robot units per normalised unit
        speed_bound = max_field_d() * RADIUS * half_range
        gains = np.minimum(1.0, SPEED_FRACTION * emb.max_velocity / speed_bound)
        # The clock's ratio c is the horizon: the ramp phi_k = k / (c + k) reaches about half way at the
        # end of the chunk, and tau = (c + 1) / rate makes the chunk start at speed F.
        ratio = float(horizon)
        psi = math.acos(math.log(ratio) / ATTENTION_SCORE_MAX)
        return cls(
            dof=emb.dof, horizon=int(horizon), n_action_steps=emb.chunk.n_action_steps,
            rate_hz=float(emb.control_rate_hz), pairs=tuple(cycle_pairs(emb)), gains=gains,
            clock_ratio=ratio, clock_psi=psi, tau_s=(ratio + 1.0) / float(emb.control_rate_hz),
            model_low=low, model_high=high, affine_gain=gain, affine_offset=offset,
        )

    # ---- spaces -------------------------------------------------------------------------------
    def normalise(self, robot: np.ndarray) -> np.ndarray:
        model = np.asarray(robot, dtype=np.float64) * self.affine_gain + self.affine_offset
        return np.clip(2.0 * (model - self.model_low) / (self.model_high - self.model_low) - 1.0, -1.0, 1.0)

    def to_robot(self, v: np.ndarray) -> np.ndarray:
        model = (np.clip(v, -1.0, 1.0) + 1.0) / 2.0 * (self.model_high - self.model_low) + self.model_low
        return (model - self.affine_offset) / self.affine_gain

    # ---- the motion ---------------------------------------------------------------------------
    def moving_joints(self) -> list[int]:
        return sorted(j for p in self.pairs for j in (p.a, p.b))

    def field(self, v: np.ndarray, image_feature: np.ndarray) -> np.ndarray:
        """F(v, images) in normalised units per second (zero for joints that hold)."""
        v = np.asarray(v, dtype=np.float64)
        d = (v - CENTER) / RADIUS
        brightness, warmth = image_drive(image_feature)
        f = np.zeros(self.dof)
        for p in self.pairs:
            f[p.a] = -OMEGA * rotation_term(d[p.b]) + MU * radial_term(d[p.a]) + IMAGE_GAIN * brightness
            f[p.b] = OMEGA * rotation_term(d[p.a]) + MU * radial_term(d[p.b]) + IMAGE_GAIN * warmth
        return f * self.gains * RADIUS

    def clock(self) -> np.ndarray:
        """phi_k, k < horizon: 0 at k = 0, rising smoothly (about k / (c + k))."""
        return 1.0 - clock_weights(self.horizon, self.clock_psi)

    def chunk_normalised(self, v_state: np.ndarray, image_feature: np.ndarray) -> np.ndarray:
        """The chunk (horizon, dof) for a normalised state (already a bin centre) and image feature."""
        v = np.asarray(v_state, dtype=np.float64)
        phi = self.clock()[:, None]
        return np.clip(v[None, :] + phi * self.tau_s * self.field(v, image_feature)[None, :], -1.0, 1.0)

    def chunk(self, state_robot: np.ndarray, image_feature: np.ndarray) -> np.ndarray:
        """What the tiny checkpoint returns for this state: (n_action_steps, dof) in robot units."""
        v = quantize(self.normalise(state_robot))
        return self.to_robot(self.chunk_normalised(v, image_feature)[: self.n_action_steps])


def image_drive(image_feature: np.ndarray) -> tuple[float, float]:
    """(brightness, warmth) from the mean per-token colour feature (r, g, b)."""
    r, g, b = (float(x) for x in np.asarray(image_feature, dtype=np.float64)[:3])
    return (r + g + b) / 3.0, (r - b) / 2.0


def token_colour_feature(token_rgb: np.ndarray) -> np.ndarray:
    """Image feature from per-image-token mean colours (N, 3) in [-1, 1]: the mean of each token's
    colour read against a constant carrier, (r, g, b) / |(IMAGE_CARRIER, r, g, b)|, as the model does."""
    rgb = np.asarray(token_rgb, dtype=np.float64).reshape(-1, 3)
    if rgb.size == 0:
        return np.zeros(3)
    scale = np.sqrt(IMAGE_CARRIER ** 2 + (rgb ** 2).sum(axis=1, keepdims=True))
    return (rgb / scale).mean(axis=0)


def image_tokens_rgb(pixel_values: Any, token_pooling: Any, image_grids: Any = None,
                     image_num_crops: Any = None) -> np.ndarray:
    """Per image token, the mean colour the tiny checkpoint's vision path computes, from the processor's
    ``pixel_values`` (crops, patches, 14*14*3, in [-1, 1]), ``image_token_pooling`` (tokens, 4; indices
    into each image's own patches), ``image_grids`` and ``image_num_crops`` (per image)."""
    pixels = np.asarray(pixel_values, dtype=np.float64)
    patches_per_crop = pixels.shape[1]
    # The model snaps processor floats back to the 8-bit grid before the vision encoder.
    pixels = np.clip(np.round((pixels + 1.0) * 0.5 * 255.0), 0.0, 255.0) / 255.0 * 2.0 - 1.0
    patches = pixels.reshape(-1, pixels.shape[-1] // 3, 3).mean(axis=1)  # (crops * patches, 3)
    pooling = np.asarray(token_pooling, dtype=np.int64).copy()
    if image_grids is not None and image_num_crops is not None:
        # Like the model's build_batched_images: image i's indices are offset by the patches before it.
        grids = np.asarray(image_grids, dtype=np.int64).reshape(-1, 4)
        crops = np.asarray(image_num_crops, dtype=np.int64).reshape(-1)
        tokens_per_image = grids[:, :2].prod(axis=1) + grids[:, 2:].prod(axis=1)
        row, offset = 0, 0
        for n_tokens, n_crops in zip(tokens_per_image, crops, strict=True):
            block = pooling[row:row + n_tokens]
            pooling[row:row + n_tokens] = np.where(block >= 0, block + offset, block)
            row += int(n_tokens)
            offset += int(n_crops) * patches_per_crop
    valid = pooling >= 0
    summed = np.where(valid[..., None], patches[np.clip(pooling, 0, None)], 0.0).sum(axis=1)
    count = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    return summed / count


def image_feature(processor: Any, images: list[Any]) -> np.ndarray:
    """The image feature the tiny checkpoint computes for ``images`` (camera order), using the checkpoint's
    own processor for the resizing and cropping (so the reference sees the pixels the model sees)."""
    prefix = "<|image|>" if len(images) == 1 else "".join(f"Image {i + 1}<|image|>" for i in range(len(images)))
    inputs = processor(text=prefix + "<|im_start|>user\nx<|im_end|>", images=images, return_tensors="np")
    return token_colour_feature(image_tokens_rgb(inputs["pixel_values"], inputs["image_token_pooling"],
                                                 inputs["image_grids"], inputs["image_num_crops"]))


def matches(got: np.ndarray, reference: np.ndarray, atol: float = 1.5e-3, rtol: float = 0.02) -> np.ndarray:
    """Per element, whether a real chunk matches the scripted one: step 0 (the state) within ``atol``, every
    later step's displacement from step 0 within ``atol`` + ``rtol`` of the scripted displacement.

    The relative part covers the share of attention the model's state heads give to the other prompt
    tokens (about 0.5 %, more with depth tokens): the circuit corrects the state for it but the field
    keeps it, so the real motion is that much slower than the script.
    """
    got, reference = np.asarray(got, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    moved, scripted = got - got[:1], reference - reference[:1]
    ok = np.abs(moved - scripted) <= atol + rtol * np.abs(scripted)
    ok[0] = np.abs(got[0] - reference[0]) <= atol
    return ok


__all__ = [
    "CENTER", "RADIUS", "CyclePair", "MotionDesign", "bin_features", "bin_values", "clock_weights",
    "cycle_pairs", "image_drive", "image_feature", "image_tokens_rgb", "matches", "quantize", "radial_term",
    "rotation_term", "token_colour_feature",
]
