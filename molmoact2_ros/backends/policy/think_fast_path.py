"""What the runtime adds around the remote code's Think (depth reasoning) call, with identical outputs.

A Think call on a static scene cost 1.43x a continuous one (P5, tiny model, CPU). Of the extra, two parts
are pure functions of the inputs, recomputed on the critical path every call:

- the depth-buffer rule (resize the first image to the 320x320 depth grid, patch cosine against the cached
  image: ~3 ms, 2 of them the PIL resize). Its inputs are known when ``predict`` starts, but the model
  only asks for the mask after building the prompt, preprocessing the images and the prefill.
  :class:`DepthMaskProbe` (installed in place of the module's ``_compute_depth_update_mask``) takes the
  mask computed meanwhile on a worker thread (:class:`EarlyRule`): the same functions on the same
  arrays, so the same mask (PIL and numpy release the GIL, so this overlaps on a second core; with no
  free core it costs what it cost before);
- the depth-decode attention bias (a (1, 1, L, L) causal mask, L = prompt + ~1000 cache slots: ~1.5 ms
  on the tiny model, L^2 values to write on a GPU): a function of L, the batch size, the attention mask,
  device and dtype only. :class:`BiasMemo` keeps the last one and returns it while those are unchanged
  (every consumer reads it: slices and ``attn_mask``; nothing writes into it).

Both are switched per call (``fast`` in :data:`depth_call`): the runtime's ``think_fast_path=False`` runs
the remote code exactly as shipped (the reference the equivalence test compares against).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

# Per thread, for the call in progress: ``mask`` and ``small_image`` (what the rule decided, read back by
# the runtime), ``early`` (an EarlyRule or None) and ``fast`` (use the memoised bias).
depth_call = threading.local()


@dataclass
class EarlyRule:
    """The rule's result being computed on a worker for (``current``, ``previous``) before the model asks."""

    future: Future
    current: Any
    previous: Any
    num_depth_codes: int

    def matches(self, current: Any, previous: Any, num_depth_codes: int) -> bool:
        """Whether the model asks about the very inputs the worker used (else the result is not used)."""
        return (int(num_depth_codes) == self.num_depth_codes
                and _same(current, self.current) and _same(previous, self.previous))


def _same(a: Any, b: Any) -> bool:
    # The model passes the caller's uint8 arrays through unchanged (np.asarray): identity is the rule.
    if a is b:
        return True
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


class DepthMaskProbe:
    """Wraps the remote code's ``_compute_depth_update_mask`` so one call computes it once, not twice.

    The node reports the fraction of depth cells each call re-predicts. Computing the mask beside the
    model doubled its cost (two PIL resizes of the first image plus the patch similarity, ~9 ms of a
    ~60 ms tiny Think call). The probe instead records the mask the model itself computed, and the
    first image already resized to the depth grid (320x320), which becomes the cache's image: the rule
    resizes both images to that size, so a pre-resized previous image gives the same mask and saves
    a resize on every later call. With an :class:`EarlyRule` for the same inputs it returns that result.
    """

    def __init__(self, original: Any, resize: Any, patch_size: int, normalize: Any = None) -> None:
        self.original = original
        self.resize = resize
        self.patch_size = int(patch_size)
        self.normalize = normalize  # the model's own conversion of the cached image, for EarlyRule

    def compute(self, current_image: Any, previous_image: Any, num_depth_codes: int) -> tuple[Any, Any]:
        """(the current image at the depth grid's size, the update mask): what the model's call computes."""
        side = math.isqrt(int(num_depth_codes))
        small = current_image
        if side * side == int(num_depth_codes):  # the rule itself raises for a non-square grid
            small = self.resize(np.asarray(current_image), side * self.patch_size)
        return small, self.original(small, previous_image, num_depth_codes=num_depth_codes)

    def __call__(self, current_image: Any, previous_image: Any, *, num_depth_codes: int) -> Any:
        early = getattr(depth_call, "early", None)
        depth_call.early = None
        result = None
        if early is not None and early.matches(current_image, previous_image, num_depth_codes):
            try:
                result = early.future.result()
            except Exception:  # computed again below, so that the model sees the error where it always did
                result = None
        if result is None:
            result = self.compute(current_image, previous_image, num_depth_codes)
        small, mask = result
        depth_call.mask = mask
        depth_call.small_image = small
        return mask

    @classmethod
    def install(cls, module: Any) -> DepthMaskProbe | None:
        """Install the probe in a loaded remote-code module (once); None if the module lacks the rule."""
        current = getattr(module, "_compute_depth_update_mask", None)
        if isinstance(current, cls):
            return current
        resize = getattr(module, "_resize_depth_reasoning_image", None)
        patch = getattr(module, "_DEPTH_REASONING_PATCH_SIZE", None)
        if current is None or resize is None or patch is None:
            return None
        probe = cls(current, resize, int(patch), getattr(module, "_normalize_image_for_cache", None))
        module._compute_depth_update_mask = probe
        return probe


class BiasMemo:
    """Wraps a model's ``_make_depth_decode_attention_bias``: the same tensor while its inputs are the same.

    The bias depends on the static cache's length, the batch size, the attention mask (usually dropped as
    trivial), the device and the LM head's dtype (the remote code's builder reads nothing else)."""

    def __init__(self, build: Any, dtype_of: Any) -> None:
        self.build = build
        self.dtype_of = dtype_of  # the LM head's dtype now (a model can be cast after loading)
        self._key: tuple[Any, ...] | None = None
        self._value: Any = None

    def __call__(self, inputs: Any, past_key_values: Any) -> Any:
        if not getattr(depth_call, "fast", False):
            return self.build(inputs, past_key_values)
        layers = getattr(past_key_values, "layers", None)
        max_cache_len = int(getattr(layers[0], "max_cache_len", 0)) if layers else 0
        input_ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        mask_key = None if mask is None else (tuple(mask.shape), mask.detach().cpu().numpy().tobytes())
        key = (max_cache_len, int(input_ids.shape[0]), str(input_ids.device), str(self.dtype_of()), mask_key)
        if key != self._key or self._value is None:
            self._value = None  # free the previous one before building the next (GPU memory)
            self._value = self.build(inputs, past_key_values)
            self._key = key
        return self._value

    def clear(self) -> None:
        self._key = self._value = None

    @classmethod
    def install(cls, model: Any) -> BiasMemo | None:
        build = getattr(model, "_make_depth_decode_attention_bias", None)
        if build is None:
            return None
        if isinstance(build, cls):
            return build
        memo = cls(build, lambda: model.lm_head.weight.dtype)
        model._make_depth_decode_attention_bias = memo  # an instance attribute: this model only
        return memo
