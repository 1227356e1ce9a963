"""Size tables for MolmoAct2 checkpoints built from the real remote code (:mod:`tiny_checkpoint`'s builder).

One builder, three tables:

- :data:`TINY`: the 64-wide test model whose weights carry the scripted-motion circuit (:mod:`tiny_circuit`);
- :data:`RELEASED`: the released checkpoint's sizes, for a random-weight model of the real cost
  (``benchmarks/gpu_check.py``). Values from MOLMOACT2.md (Qwen3-4B: 36 layers, d=2560, 32 heads, 8 KV
  heads, head_dim 128; SigLIP2: 1152 wide, 27 layers, 378 px, patch 14; the action expert as deep as the
  LLM). Not in MOLMOACT2.md and taken from the public Qwen3-4B / SigLIP2-so400m configs: the MLP widths
  (9728, 4304), the vocabulary (151936), the ViT's 16 heads of 72. Not published anywhere we can read:
  the action expert's width (the config class default, 1024 with 16 heads), the adapter's MLP width
  (assumed the LLM's) and the processor's crop settings (the image processor's defaults: up to 8 crops,
  margins 4). Random weights cost the same as trained ones; these guesses move the cost by tens of percent
  at most, so a GPU run that disagrees with the paper should check them first;
- :data:`RELEASED_REDUCED`: :data:`RELEASED` with every width, depth, crop count and image size scaled
  down and every structural choice kept (GQA ratio, qk-norm, the two ViT layers the adapter reads, the
  crop mode, the real vocabulary): the test of the real-size build path on a CPU in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSizes:
    """Everything that sizes a MolmoAct2 model and its image processor. ``vocab_size`` 0: round the
    tokenizer's size up to a multiple of 64 (what the tiny checkpoint does)."""

    name: str
    text_hidden: int
    text_layers: int  # the action expert gets the same number (the model raises otherwise)
    text_heads: int
    text_kv_heads: int
    text_head_dim: int
    text_intermediate: int
    vocab_size: int
    max_position_embeddings: int
    vit_hidden: int
    vit_layers: int
    vit_heads: int
    vit_head_dim: int
    vit_intermediate: int
    image_size: int
    patch_size: int
    adapter_vit_layers: tuple[int, ...]
    adapter_heads: int
    adapter_head_dim: int
    adapter_intermediate: int
    expert_hidden: int
    expert_heads: int
    expert_ffn_multiple_of: int
    expert_timestep_dim: int
    max_crops: int
    overlap_margins: tuple[int, int]
    circuit: bool  # set the scripted-motion weights (tiny only: they assume its widths)


TINY = ModelSizes(
    name="tiny", text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=2, text_head_dim=16,
    text_intermediate=128, vocab_size=0, max_position_embeddings=4096,
    vit_hidden=32, vit_layers=2, vit_heads=2, vit_head_dim=16, vit_intermediate=64, image_size=56, patch_size=14,
    # Like the real (-3, -9): features of two ViT layers, concatenated.
    adapter_vit_layers=(-1, -2), adapter_heads=2, adapter_head_dim=16, adapter_intermediate=64,
    expert_hidden=64, expert_heads=4, expert_ffn_multiple_of=64, expert_timestep_dim=64,
    # One crop plus the global view; margins must leave a positive window in a 4-patch crop.
    max_crops=1, overlap_margins=(1, 1), circuit=True,
)

RELEASED = ModelSizes(
    name="released", text_hidden=2560, text_layers=36, text_heads=32, text_kv_heads=8, text_head_dim=128,
    text_intermediate=9728, vocab_size=151936, max_position_embeddings=40960,
    vit_hidden=1152, vit_layers=27, vit_heads=16, vit_head_dim=72, vit_intermediate=4304, image_size=378,
    patch_size=14, adapter_vit_layers=(-3, -9), adapter_heads=16, adapter_head_dim=72, adapter_intermediate=9728,
    expert_hidden=1024, expert_heads=16, expert_ffn_multiple_of=256, expert_timestep_dim=256,
    max_crops=8, overlap_margins=(4, 4), circuit=False,
)

RELEASED_REDUCED = ModelSizes(
    name="released-reduced", text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=1, text_head_dim=16,
    text_intermediate=243, vocab_size=RELEASED.vocab_size, max_position_embeddings=4096,
    # 9 ViT layers: the fewest that still have the adapter's layer -9.
    vit_hidden=32, vit_layers=9, vit_heads=2, vit_head_dim=16, vit_intermediate=120, image_size=56,
    patch_size=14, adapter_vit_layers=RELEASED.adapter_vit_layers, adapter_heads=2, adapter_head_dim=16,
    adapter_intermediate=243, expert_hidden=32, expert_heads=2, expert_ffn_multiple_of=32,
    expert_timestep_dim=32, max_crops=2, overlap_margins=(1, 1), circuit=False,
)

SIZES = {s.name: s for s in (TINY, RELEASED, RELEASED_REDUCED)}
