"""Weights that make the tiny MolmoAct2 checkpoint compute the scripted motions of :mod:`tiny_motion`.

The tiny checkpoint must move a robot smoothly, start every chunk at the measured state, and react to the
images, all through the real MolmoAct2 code (``predict_action``: vision encoder, LLM prefill, flow-matching
action expert integrated by the model's own Euler loop). Fitting a 64-wide model to that by gradient
descent was tried and rejected: after 300 steps (~25 s) the state it reads back from the prompt was still
off by 0.13 (RMS, in [-1, 1] units; a chunk must start within ~0.02), and the action expert has no
positional input besides its flow noise, so a learned expert cannot produce a chunk that is smooth to the
~0.002 rad per step^2 a driver needs. So the weights are set here, by construction; every number is
derived below and the tests compare the real model's output with :mod:`tiny_motion`.

The circuit, stage by stage (residual dimensions not listed keep the random initialisation, cut off from
the circuit: random weights never read or write a reserved dimension):

Vision: the patch embedding writes each patch's mean R, G, B and a constant into four ViT dimensions that
no ViT block writes to; pooling is uniform; the projector copies them to four LLM dimensions of every
image token (the constant as a carrier, so a token's colour is read as (r, g, b) / |(C, r, g, b)|).

LLM layer 0: every state token's embedding carries a large constant (a "span" carrier, also on
``<state_start>``) and its bin's features (v, S(d), H(d)) from :func:`tiny_motion.bin_features`. One
attention head attends uniformly to the span tokens seen so far and reads a marker on ``<state_start>``,
so the state token of joint j gets u_j = 1 / (j + 2): its joint index. The MLP turns that into routing
with SwiGLU step functions of u (exact plateaus, the silu tails below e^-40): token j adds v_j into
cumulative dimensions m >= j, and each cycle joint adds its field terms (rotation of its partner,
radial of itself) into per-joint field dimensions.

LLM layer 1 keys and values (what the action expert cross-attends to): a key that is +1 on span tokens
and -1 elsewhere, one that is +1 on image tokens, and values carrying the span carrier, the cumulative
state sums, the field terms and the image colours. The carrier dominates each value vector, so the
expert's RMS normalisation of the context stays linear in the small terms.

Action expert (``causal_attn`` on, action-dim padding unmasked, both real config options):
  block 0 self-attention: two heads with bit-identical values (a copy of the flow noise in the padded
  action dimensions) but different attention patterns; their difference, scaled by a power of two, is
  exactly 0 at action position 0 (causal: it sees only itself) and large everywhere else.
  block 1 self-attention: that difference saturates the head's (RMS-normalised) key, so position 0 keeps
  a clean key and wins a fixed score; its weight seen from position k is the clock w_k ~ c / (c + k).
  Its output bias adds a very large constant so every later normalisation is linear.
  block 1 cross-attention: two heads read the state (cumulative sums, differenced linearly) and the field
  terms, one head reads the image colours; a count of the span tokens' share of attention comes along.
  block 1 MLP: exact bilinear products (silu(z) u - silu(-z) u = z u) correct the state for the attention
  that leaked to other tokens and add (1 - w_k) tau F to the cycle joints.
  final layer: velocity = 7 (target - x), which the model's Euler loop integrates onto the target from
  any noise (residual (1 - 0.7)^10 ~ 6e-6 of the noise at the default 10 steps).

Two assumptions, both checked by the tests (which compare every step of real chunks with the script):
the two block-0 heads, having identical weights and inputs, give bit-identical values (true of every
GEMM that does not reorder identical columns differently; a platform where it fails loses the clock and
the tests fail); and the model runs in fp32. In bf16 the LLM's routing steps (differences of silus of
~1e4) keep only ~2 significant digits: chunks still start near the state at home but drift by several
hundredths of a radian away from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from molmoact2_ros.backends.policy import tiny_motion as tm
from molmoact2_ros.core.errors import CheckpointError

# ---- shared constants -------------------------------------------------------------------------
FLOW_RATE = 7.0  # velocity = FLOW_RATE * (target - x): contraction per Euler step 1 - FLOW_RATE / steps
RMS_EPS = 1e-6  # the expert's RMSNorm eps

# LLM
SPAN_CARRIER = 1.0e4  # dominates every state token's residual, so RMS norms there are constant
COUNT_GAIN = 16.0  # q_norm/k_norm weight on the counting dimension: scores of 1024 (exact 0/1 weights)
STEP_MARGIN = 40.0  # silu tails at the routing steps' edges are below e^-40
VALUE_RATIO = 3.0e-4  # state terms relative to the carrier in the values the expert reads
IMAGE_KEY_GAIN = 4.0  # image tokens' carrier, normalised, is >= ~6: their key flag is clearly positive

# Expert
ACTION_COPY = 2.0 ** -20  # the trajectory copied into the residual (small: it must not move the norms)
NOISE_COPY = 2.0 ** -40  # the flow noise of the padded action dims, for the position-0 detector
DETECTOR_GAIN = 2.0 ** 52  # makes the detector's difference ~1e4 away from position 0 (exact 0 at it)
DETECTOR_DIMS = 8
CLOCK_KEY_GAIN = 1.0e5  # the detector saturates the clock head's normalised key away from position 0
BIG_CARRIER = 1.0e8  # added after the clock: dominates every later norm
# Residual value per unit of: the target (normalised action), the field (normalised units / s), the span
# tokens' attention share. Any scale works under the big carrier; 1 keeps the numbers readable.
T_UNIT = 1.0
F_UNIT = 1.0
CNT_UNIT = 1.0

# The causal "pattern" head of block 0: a query/key spread over three fast RoPE pairs, so it weighs
# recent positions more than the uniform head does.
_PATTERN_DIMS = (0, 1, 2)


def _t(value: Any, like: Any) -> Any:
    import torch

    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=like.dtype)


@dataclass
class _Layout:
    """Which residual dimensions the circuit owns."""

    dof: int
    n_pairs: int
    # LLM
    llm_hidden: int
    d_const: int
    d_span: int
    d_start: int
    d_feat: tuple[int, int, int]
    d_count: int
    d_img: tuple[int, int, int, int]  # carrier, r, g, b
    d_cum: tuple[int, ...]  # per joint
    d_field: tuple[int, ...]  # per cycle joint (pair a, pair b, ...)
    # expert
    e_action: tuple[int, ...]
    e_noise: tuple[int, ...]
    e_detect: tuple[int, ...]
    e_target: tuple[int, ...]
    e_field: tuple[int, ...]
    e_carrier: int
    e_big: int
    e_clock: int
    e_count: int

    @property
    def llm_reserved(self) -> list[int]:
        return sorted({self.d_const, self.d_span, self.d_start, *self.d_feat, self.d_count, *self.d_img,
                       *self.d_cum, *self.d_field})

    @property
    def expert_reserved(self) -> list[int]:
        return sorted({*self.e_action, *self.e_noise, *self.e_detect, *self.e_target, *self.e_field,
                       self.e_carrier, self.e_big, self.e_clock, self.e_count})


def _layout(dof: int, n_pairs: int, llm_hidden: int = 64, expert_hidden: int = 64, max_action_dim: int = 32,
            const_dim: int = 63, llm_intermediate: int = 128, expert_intermediate: int = 192) -> _Layout:
    top = list(range(llm_hidden - 1, -1, -1))
    top.remove(const_dim)
    take = iter(top)
    d_span, d_start = next(take), next(take)
    d_feat = (next(take), next(take), next(take))
    d_count = next(take)
    d_img = (next(take), next(take), next(take), next(take))
    d_cum = tuple(next(take) for _ in range(dof))
    d_field = tuple(next(take) for _ in range(2 * n_pairs))
    padded = max_action_dim - dof
    noise_dims = min(DETECTOR_DIMS, padded)
    if noise_dims < 4:
        raise CheckpointError(f"tiny checkpoint: {dof} joints leave too few padded action dims for its clock")
    e_next = iter(range(expert_hidden))
    e_action = tuple(next(e_next) for _ in range(dof))
    e_noise = tuple(next(e_next) for _ in range(noise_dims))
    e_detect = tuple(next(e_next) for _ in range(noise_dims))
    e_target = tuple(next(e_next) for _ in range(dof))
    e_field = tuple(next(e_next) for _ in range(2 * n_pairs))
    expert_dims = 2 * dof + 2 * noise_dims + 2 * n_pairs + 4
    llm_dims = 10 + dof + 2 * n_pairs  # besides the constant dimension
    llm_units = 2 * dof + 16 * n_pairs  # routing steps: 2 units per cumulative sum, 4 x 4 per pair
    # the LLM's layer-1 values: carrier, sums, field terms, image (4); the expert MLP: 2 units per product
    if (expert_dims > expert_hidden or llm_dims > len(top) or llm_units > llm_intermediate
            or 1 + dof + 2 * n_pairs + 4 > 32 or 2 * dof + 4 * n_pairs > expert_intermediate
            or dof + 2 * n_pairs > 2 * 15):
        raise CheckpointError(f"tiny checkpoint: {dof} joints do not fit the tiny model's width")
    return _Layout(
        dof=dof, n_pairs=n_pairs, llm_hidden=llm_hidden, d_const=const_dim, d_span=d_span, d_start=d_start,
        d_feat=d_feat, d_count=d_count, d_img=d_img, d_cum=d_cum, d_field=d_field,
        e_action=e_action, e_noise=e_noise, e_detect=e_detect, e_target=e_target, e_field=e_field,
        e_carrier=expert_hidden - 1, e_big=expert_hidden - 2, e_clock=expert_hidden - 3,
        e_count=expert_hidden - 4,
    )


def fits(dof: int, n_pairs: int) -> bool:
    """Whether a tiny checkpoint (the sizes tiny_checkpoint uses) has room for these joints and pairs."""
    try:
        _layout(dof, n_pairs)
    except CheckpointError:
        return False
    return True


# ---- vision -------------------------------------------------------------------------------------

def _vision(state: dict[str, Any], config: Any, lay: _Layout) -> None:
    vit = config.vit_config
    hidden = vit.hidden_size
    mine = [hidden - 1, hidden - 2, hidden - 3, hidden - 4]  # carrier, r, g, b
    pre = "model.vision_backbone.image_vit."
    pe_w, pe_b = state[pre + "patch_embedding.weight"], state[pre + "patch_embedding.bias"]
    pixels = pe_w.shape[1] // 3
    pe_w[mine] = 0.0
    pe_b[mine] = 0.0
    pe_b[mine[0]] = 1.0
    for channel in range(3):
        pe_w[mine[1 + channel], channel::3] = 1.0 / pixels  # processor patches are (y, x, channel)
    state[pre + "positional_embedding"][:, mine] = 0.0
    i = 0
    while f"{pre}transformer.resblocks.{i}.attention.wo.weight" in state:
        block = f"{pre}transformer.resblocks.{i}."
        for reader in ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1"):
            state[block + reader + ".weight"][:, mine] = 0.0
        for writer in ("attention.wo", "feed_forward.w2"):
            state[block + writer + ".weight"][mine] = 0.0
            state[block + writer + ".bias"][mine] = 0.0
        i += 1
    # Pooling: features are concat(last layer, second last); read "mine" from the first half, uniformly.
    pool = "model.vision_backbone.image_pooling_2d."
    for name in ("wq", "wk"):
        state[pool + name + ".weight"].zero_()
        state[pool + name + ".bias"].zero_()
    wv, wv_b = state[pool + "wv.weight"], state[pool + "wv.bias"]
    head = wv.shape[0] // config.adapter_config.num_attention_heads
    wv[:head] = 0.0
    wv_b[:head] = 0.0
    wv[:, mine] = 0.0
    wv[:, [hidden + d for d in mine]] = 0.0
    for slot, dim in enumerate(mine):
        wv[slot, dim] = 1.0
    wo, wo_b = state[pool + "wo.weight"], state[pool + "wo.bias"]
    pooled = list(range(4))
    wo[pooled] = 0.0
    wo_b[pooled] = 0.0
    wo[:, :head] = 0.0
    for slot in pooled:
        wo[slot, slot] = 1.0
    # Projector (SwiGLU, no bias): silu(L * carrier) ~ L gates a copy of (carrier, r, g, b).
    proj = "model.vision_backbone.image_projector."
    w1, w2, w3 = state[proj + "w1.weight"], state[proj + "w2.weight"], state[proj + "w3.weight"]
    units = list(range(4))
    gate = 40.0  # silu(40 * f) for a pooled carrier f in [1/4, 1]: the same factor on all four channels
    for w in (w1, w3):
        w[units] = 0.0
        w[:, pooled] = 0.0
    w2[:, units] = 0.0
    w2[lay.llm_reserved] = 0.0
    carrier_scale = tm.IMAGE_CARRIER * 10.0 / gate  # image tokens' carrier ~10 dominates their random dims
    colour_scale = 10.0 / gate
    for unit, dim in zip(units, lay.d_img, strict=True):
        w1[unit, pooled[0]] = gate
        w3[unit, pooled[unit]] = 1.0
        w2[dim, unit] = carrier_scale if unit == 0 else colour_scale


# ---- LLM ----------------------------------------------------------------------------------------

def _isolate_llm(state: dict[str, Any], config: Any, lay: _Layout) -> None:
    """Random weights neither read nor write reserved dims; every token has 1 in the constant dim."""
    res = lay.llm_reserved
    for table in ("model.transformer.wte.embedding", "model.transformer.wte.new_embedding"):
        state[table][:, res] = 0.0
        state[table][:, lay.d_const] = 1.0
    for i in range(config.text_config.num_hidden_layers):
        pre = f"model.transformer.blocks.{i}."
        state[pre + "self_attn.att_proj.weight"][:, res] = 0.0
        state[pre + "self_attn.attn_out.weight"][res] = 0.0
        state[pre + "mlp.ff_proj.weight"][:, res] = 0.0
        state[pre + "mlp.ff_out.weight"][res] = 0.0
        state[pre + "attn_norm.weight"][res] = 1.0
        state[pre + "ff_norm.weight"][res] = 1.0


def _set_embedding_row(state: dict[str, Any], token_id: int, row: Any) -> None:
    base = state["model.transformer.wte.embedding"]
    if token_id < base.shape[0]:
        base[token_id] = row
    else:
        state["model.transformer.wte.new_embedding"][token_id - base.shape[0]] = row


def _state_tokens(state: dict[str, Any], config: Any, lay: _Layout) -> None:
    hidden = lay.llm_hidden
    start = np.zeros(hidden)
    start[lay.d_const] = 1.0
    start[lay.d_span] = SPAN_CARRIER
    start[lay.d_start] = 1.0
    like = state["model.transformer.wte.embedding"]
    _set_embedding_row(state, config.state_start_token_id, _t(start, like))
    features = tm.bin_features()
    for k in range(config.num_state_tokens):
        row = np.zeros(hidden)
        row[lay.d_const] = 1.0
        row[lay.d_span] = SPAN_CARRIER
        row[list(lay.d_feat)] = features[k]
        _set_embedding_row(state, config.state_token_start_id + k, _t(row, like))


def _count_thresholds(dof: int) -> list[tuple[float, float]]:
    """Step m (m = -1 .. dof-1) is on for tokens of joint index <= m: u = 1/(j+2) >= threshold.

    Returns (lower, upper) edges of each step's ramp, inside the gap between u_{m+1} and u_m.
    """
    u = [1.0] + [1.0 / (j + 2) for j in range(dof + 1)]  # u of <state_start>, then joints 0..dof
    edges = []
    for m in range(-1, dof):
        hi, lo = u[m + 1], u[m + 2]
        gap = hi - lo
        edges.append((lo + 0.25 * gap, lo + 0.75 * gap))
    return edges


def _llm_layer0(state: dict[str, Any], config: Any, lay: _Layout, design: tm.MotionDesign) -> None:
    text = config.text_config
    hd, heads, kv = text.head_dim, text.num_attention_heads, text.num_key_value_heads
    pre = "model.transformer.blocks.0."
    att_w, att_b = state[pre + "self_attn.att_proj.weight"], state[pre + "self_attn.att_proj.bias"]
    q0, k0, v0 = 0, heads * hd, heads * hd + kv * hd
    slow = hd // 2 - 1  # the slowest RoPE pair: positions barely rotate it
    # q-heads 0 and 1 share kv-head 0: head 0 counts, head 1 is silenced.
    att_w[q0:q0 + 2 * hd] = 0.0
    att_b[q0:q0 + 2 * hd] = 0.0
    att_b[q0 + slow] = 1.0
    att_w[k0:k0 + hd] = 0.0
    att_b[k0:k0 + hd] = 0.0
    att_w[k0 + slow, lay.d_span] = 1.0  # key only on span tokens (k_norm makes it scale-free)
    att_w[v0:v0 + hd] = 0.0
    att_b[v0:v0 + hd] = 0.0
    n0 = 8.0 / SPAN_CARRIER  # RMS-normalised value of 1 on a span token (the carrier dominates)
    att_w[v0, lay.d_start] = 1.0 / n0  # value 1 on <state_start>, 0 elsewhere
    state[pre + "self_attn.q_norm.weight"][slow] = COUNT_GAIN
    state[pre + "self_attn.k_norm.weight"][slow] = COUNT_GAIN
    attn_out = state[pre + "self_attn.attn_out.weight"]
    attn_out[:, : 2 * hd] = 0.0
    attn_out[lay.d_count, 0] = 1.0  # u_j = 1 / (j + 2) on the state token of joint j

    # MLP: step functions of u gate copies of the state token's features.
    ff_in = state[pre + "mlp.ff_proj.weight"]  # rows [0, I) up, [I, 2I) gate
    ff_out = state[pre + "mlp.ff_out.weight"]
    inner = ff_out.shape[1]
    edges = _count_thresholds(lay.dof)
    units = iter(range(inner))  # units the circuit does not take keep their random (isolated) weights

    def step(m: int, up: dict[int, float], out: dict[int, float], sign: float) -> None:
        """Add sign * [joint index <= m] * (up . features) into the ``out`` dims (two units)."""
        lo, hi = edges[m + 1]
        gain = STEP_MARGIN / (0.25 * (hi - lo) / 0.5)  # margin STEP_MARGIN at a quarter gap from u
        plateau = gain * (hi - lo)
        for edge, weight in ((lo, 1.0), (hi, -1.0)):
            unit = next(units)
            ff_in[unit] = 0.0
            ff_in[inner + unit] = 0.0
            ff_in[inner + unit, lay.d_count] = gain / n0
            ff_in[inner + unit, lay.d_span] = -gain * edge / (SPAN_CARRIER * n0)
            for dim, w in up.items():
                ff_in[unit, dim] = w / n0
            ff_out[:, unit] = 0.0
            for dim, w in out.items():
                ff_out[dim, unit] = sign * weight * w / plateau

    v_feat, s_feat, h_feat = lay.d_feat
    for m in range(lay.dof):
        step(m, {v_feat: 1.0}, {lay.d_cum[m]: 1.0}, 1.0)
    for p_index, pair in enumerate(design.pairs):
        fa, fb = lay.d_field[2 * p_index], lay.d_field[2 * p_index + 1]
        ga, gb = float(design.gains[pair.a]), float(design.gains[pair.b])
        # token a: radial term into F_a, rotation (+) into F_b; token b: radial into F_b, rotation (-) into F_a
        for joint, terms in ((pair.a, ((h_feat, fa, tm.MU * ga), (s_feat, fb, tm.OMEGA * gb))),
                             (pair.b, ((h_feat, fb, tm.MU * gb), (s_feat, fa, -tm.OMEGA * ga)))):
            for feat, out_dim, w in terms:
                step(joint, {feat: 1.0}, {out_dim: w}, 1.0)
                step(joint - 1, {feat: 1.0}, {out_dim: w}, -1.0)


def _llm_layer1(state: dict[str, Any], config: Any, lay: _Layout) -> _ValueLayout:
    text = config.text_config
    hd, heads, kv = text.head_dim, text.num_attention_heads, text.num_key_value_heads
    pre = "model.transformer.blocks.1."
    att_w, att_b = state[pre + "self_attn.att_proj.weight"], state[pre + "self_attn.att_proj.bias"]
    k0, v0 = heads * hd, heads * hd + kv * hd
    slow = hd // 2 - 1
    att_w[k0:k0 + kv * hd] = 0.0
    att_b[k0:k0 + kv * hd] = 0.0
    att_w[v0:v0 + kv * hd] = 0.0
    att_b[v0:v0 + kv * hd] = 0.0
    n0 = 8.0 / SPAN_CARRIER
    # Keys: kv-head 0 flags span tokens, kv-head 1 flags image tokens (+1 there, -1 elsewhere).
    att_w[k0 + slow, lay.d_span] = 2.0 / 8.0
    att_b[k0 + slow] = -1.0
    att_w[k0 + hd + slow, lay.d_img[0]] = IMAGE_KEY_GAIN
    att_b[k0 + hd + slow] = -1.0
    state[pre + "self_attn.q_norm.weight"].fill_(1.0)
    state[pre + "self_attn.k_norm.weight"].fill_(1.0)
    vl = _ValueLayout.build(lay)
    att_w[v0 + vl.carrier, lay.d_span] = 1.0 / 8.0
    for m, dim in enumerate(lay.d_cum):
        att_w[v0 + vl.cum[m], dim] = VALUE_RATIO / n0
    for i, dim in enumerate(lay.d_field):
        att_w[v0 + vl.field[i], dim] = VALUE_RATIO / n0
    for slot, dim in zip(vl.image, lay.d_img, strict=True):
        att_w[v0 + slot, dim] = 1.0
    return vl


@dataclass
class _ValueLayout:
    """Where things sit in the LLM layer-1 value vector (2 kv heads x head_dim) and in the expert's heads."""

    carrier: int
    cum: tuple[int, ...]
    field: tuple[int, ...]
    image: tuple[int, int, int, int]
    # expert cross-attention: per state head, the value indices it carries (slot 0 is the carrier)
    state_heads: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, lay: _Layout, head_dim: int = 16) -> _ValueLayout:
        idx = iter(range(64))
        carrier = next(idx)
        cum = tuple(next(idx) for _ in lay.d_cum)
        field = tuple(next(idx) for _ in lay.d_field)
        image = (next(idx), next(idx), next(idx), next(idx))
        if image[-1] >= 32:
            raise CheckpointError("tiny checkpoint: too many joints for the LLM's value width")
        terms = list(cum) + list(field)
        per_head = head_dim - 1
        split = [terms[i:i + per_head] for i in range(0, len(terms), per_head)]
        if len(split) > 2:
            raise CheckpointError("tiny checkpoint: too many joints for the expert's state heads")
        return cls(carrier=carrier, cum=cum, field=field, image=image,
                   state_heads=tuple((carrier, *part) for part in split))


# ---- action expert ----------------------------------------------------------------------------

def _modulation(state: dict[str, Any], block: int, hidden: int, gates: tuple[float, float, float]) -> None:
    w = state[f"model.action_expert.blocks.{block}.modulation.linear.weight"]
    b = state[f"model.action_expert.blocks.{block}.modulation.linear.bias"]
    w.zero_()
    b.zero_()
    # chunks: shift_msa, scale_msa, gate_msa, shift_mca, scale_mca, gate_mca, shift_mlp, scale_mlp, gate_mlp
    for chunk, gate in zip((2, 5, 8), gates, strict=True):
        b[chunk * hidden:(chunk + 1) * hidden] = gate


def _zero_block(state: dict[str, Any], block: int) -> None:
    pre = f"model.action_expert.blocks.{block}."
    for name, t in state.items():
        if name.startswith(pre) and not name.startswith(pre + "modulation"):
            if name.endswith(("norm.weight",)):
                continue
            t.zero_()


def _expert(state: dict[str, Any], config: Any, lay: _Layout, vl: _ValueLayout, design: tm.MotionDesign) -> None:
    pre = "model.action_expert."
    hidden = state[pre + "action_embed.weight"].shape[0]
    hd = hidden // config.action_expert_config.num_heads
    slow = hd // 2 - 1
    _zero_block(state, 0)
    _zero_block(state, 1)
    # Input: copies of the trajectory (target joints) and of the noise (padded dims), a constant carrier.
    emb_w, emb_b = state[pre + "action_embed.weight"], state[pre + "action_embed.bias"]
    emb_w.zero_()
    emb_b.zero_()
    for j, dim in enumerate(lay.e_action):
        emb_w[dim, j] = ACTION_COPY
    for i, dim in enumerate(lay.e_noise):
        emb_w[dim, lay.dof + i] = NOISE_COPY
    emb_b[lay.e_carrier] = 1.0

    # Block 0: the position-0 detector. Heads 0 (uniform) and 1 (pattern) with identical value rows.
    _modulation(state, 0, hidden, (1.0, 0.0, 0.0))
    qkv_w, qkv_b = state[pre + "blocks.0.self_attn.qkv.weight"], state[pre + "blocks.0.self_attn.qkv.bias"]
    q_rows, k_rows, v_rows = 0, hidden, 2 * hidden
    for dim in _PATTERN_DIMS:
        qkv_b[q_rows + hd + dim] = 1.0
        qkv_b[k_rows + hd + dim] = 1.0
    for head in (0, 1):
        for slot, dim in enumerate(lay.e_noise):
            qkv_w[v_rows + head * hd + slot, dim] = 1.0
    out_w = state[pre + "blocks.0.self_attn.out_proj.weight"]
    for slot, dim in enumerate(lay.e_detect):
        out_w[dim, slot] = DETECTOR_GAIN
        out_w[dim, hd + slot] = -DETECTOR_GAIN

    # Block 1 self-attention: the clock head, and the big carrier.
    _modulation(state, 1, hidden, (1.0, 1.0, 1.0))
    qkv_w, qkv_b = state[pre + "blocks.1.self_attn.qkv.weight"], state[pre + "blocks.1.self_attn.qkv.bias"]
    qkv_b[q_rows + slow] = math.cos(design.clock_psi)
    qkv_b[q_rows + hd - 1] = math.sin(design.clock_psi)
    key_slots = [s for s in range(hd) if s not in (slow, hd - 1)]
    for slot, dim in zip(key_slots, lay.e_detect, strict=False):
        qkv_w[k_rows + slot, dim] = CLOCK_KEY_GAIN
    qkv_b[k_rows + slow] = 1.0
    qkv_w[v_rows, lay.e_carrier] = 1.0
    out_w, out_b = state[pre + "blocks.1.self_attn.out_proj.weight"], state[pre + "blocks.1.self_attn.out_proj.bias"]
    out_w[lay.e_clock, 0] = 1.0
    out_b[lay.e_big] = BIG_CARRIER

    # Block 1 cross-attention: constant queries; heads 0/1 read the state, head 2 the images.
    q_b = state[pre + "blocks.1.cross_attn.q_proj.bias"]
    state_heads = list(range(len(vl.state_heads)))
    image_head = 2
    for head in (*state_heads, image_head):
        q_b[head * hd] = 1.0
    ck, cv = state[pre + "context_k_proj.weight"], state[pre + "context_v_proj.weight"]
    ck.zero_()
    cv.zero_()
    for head in state_heads:
        ck[head * hd, slow] = 1.0  # LLM kv-head 0, slow dim: +1 span tokens
        for slot, index in enumerate(vl.state_heads[head]):
            cv[head * hd + slot, index] = 1.0
    ck[image_head * hd, hd + slow] = 1.0  # kv-head 1: +1 image tokens
    for slot, index in enumerate(vl.image):
        cv[image_head * hd + slot, index] = 1.0
    # The expert normalises each context value vector over all heads: a span token carries the carrier
    # once per state head, and each of its terms relative to that.
    n_carriers = len(state_heads)
    a_state = 8.0 / math.sqrt(n_carriers)
    n_span = lay.dof + 1  # <state_start> and one token per joint
    where: dict[int, tuple[int, int]] = {}
    for head, indices in enumerate(vl.state_heads):
        for slot, index in enumerate(indices):
            if slot:
                where[index] = (head, slot)
    x_out = state[pre + "blocks.1.cross_attn.out_proj.weight"]
    unit = n_span / (a_state * VALUE_RATIO)  # attention share 1/n_span, normalised carrier a, ratio
    for m, dim in enumerate(lay.e_target):
        head, slot = where[vl.cum[m]]
        x_out[dim, head * hd + slot] += 2.0 * T_UNIT * unit
        if m:
            head, slot = where[vl.cum[m - 1]]
            x_out[dim, head * hd + slot] -= 2.0 * T_UNIT * unit
    for i, dim in enumerate(lay.e_field):
        head, slot = where[vl.field[i]]
        x_out[dim, head * hd + slot] = F_UNIT * tm.RADIUS * unit
    x_out[lay.e_count, 0] = CNT_UNIT / a_state  # head 0's carrier slot: n_span * share * a
    # Image head: slots (carrier, r, g, b) of 8 (C, r, g, b) / |(C, r, g, b)|, averaged over image tokens.
    for p_index, pair in enumerate(design.pairs):
        fa, fb = lay.e_field[2 * p_index], lay.e_field[2 * p_index + 1]
        ka = F_UNIT * tm.RADIUS * float(design.gains[pair.a]) * tm.IMAGE_GAIN / 8.0
        kb = F_UNIT * tm.RADIUS * float(design.gains[pair.b]) * tm.IMAGE_GAIN / 8.0
        for c in (1, 2, 3):
            x_out[fa, image_head * hd + c] += ka / 3.0  # brightness (r + g + b) / 3
        x_out[fb, image_head * hd + 1] += kb / 2.0  # warmth (r - b) / 2
        x_out[fb, image_head * hd + 3] -= kb / 2.0

    # Block 1 MLP: bilinear corrections and the motion.
    n_big = 8.0 / BIG_CARRIER  # what the big carrier's norm makes of a residual value of 1
    sink_norm = 1.0 / math.sqrt(1.0 / hidden + RMS_EPS)  # the clock head's value at position 0
    up_w, up_b = state[pre + "blocks.1.mlp.up_proj.weight"], state[pre + "blocks.1.mlp.up_proj.bias"]
    g_w, g_b = state[pre + "blocks.1.mlp.gate_proj.weight"], state[pre + "blocks.1.mlp.gate_proj.bias"]
    down = state[pre + "blocks.1.mlp.down_proj.weight"]
    units = iter(range(up_w.shape[0]))

    def product(gate: dict[int, float], gate_bias: float, up: dict[int, float], out: dict[int, float]) -> None:
        """out += (gate . x + gate_bias) * (up . x), x the residual before normalisation (two units)."""
        for sign in (1.0, -1.0):
            unit = next(units)
            for dim, w in gate.items():
                g_w[unit, dim] = sign * w / n_big
            g_b[unit] = sign * gate_bias
            for dim, w in up.items():
                up_w[unit, dim] = sign * w / n_big
            up_b[unit] = 0.0
            for dim, w in out.items():
                down[dim, unit] = w

    for dim in lay.e_target:
        # The target holds 2 q v (q = the span tokens' true attention share over its nominal 1/n_span):
        # subtract q * (q v) to leave v (1 - (1 - q)^2).
        product({lay.e_count: 1.0 / CNT_UNIT}, 0.0, {dim: 0.5}, {dim: -1.0})
    for p_index, pair in enumerate(design.pairs):
        for joint, fdim in ((pair.a, lay.e_field[2 * p_index]), (pair.b, lay.e_field[2 * p_index + 1])):
            # + (1 - w_k) * tau * F: the clock dim holds sink_norm * w_k.
            product({lay.e_clock: -1.0 / sink_norm}, 1.0, {fdim: design.tau_s / F_UNIT},
                    {lay.e_target[joint]: T_UNIT})

    # Final layer: velocity FLOW_RATE * (target - x) on the joints, 0 on the padded dims.
    fw, fb_ = state[pre + "final_layer.linear.weight"], state[pre + "final_layer.linear.bias"]
    fw.zero_()
    fb_.zero_()
    state[pre + "final_layer.modulation.linear.weight"].zero_()
    state[pre + "final_layer.modulation.linear.bias"].zero_()
    for j in range(lay.dof):
        fw[j, lay.e_target[j]] = FLOW_RATE / (T_UNIT * n_big)
        fw[j, lay.e_action[j]] = -FLOW_RATE / (ACTION_COPY * n_big)


def apply(state: dict[str, Any], config: Any, design: tm.MotionDesign, const_dim: int) -> None:
    """Write the circuit into ``state`` (float32 tensors of a freshly initialised tiny model), in place."""
    lay = _layout(design.dof, len(design.pairs), config.text_config.hidden_size,
                  config.action_expert_config.hidden_size, config.max_action_dim, const_dim,
                  config.text_config.intermediate_size,
                  state["model.action_expert.blocks.1.mlp.up_proj.weight"].shape[0])
    _isolate_llm(state, config, lay)
    _vision(state, config, lay)
    _state_tokens(state, config, lay)
    _llm_layer0(state, config, lay, design)
    vl = _llm_layer1(state, config, lay)
    _expert(state, config, lay, vl, design)


def config_overrides() -> dict[str, Any]:
    """Real MolmoAct2 config options the circuit relies on."""
    return {"mask_action_dim_padding": False}


def action_expert_overrides() -> dict[str, Any]:
    return {"causal_attn": True}


__all__ = ["action_expert_overrides", "apply", "config_overrides", "fits"]
