"""A small Qwen2-style tokenizer with MolmoAct2's special tokens, trained offline for tiny checkpoints.

Real MolmoAct2 checkpoints ship Qwen3's 150k-token tokenizer; the tiny test checkpoint only needs a
tokenizer that the real processor and ``predict_action`` accept: a byte-level BPE (so any instruction
text encodes), Qwen2's pre-tokenizer, and every special token the remote code looks up by name, with
each numbered family (``<action_N>``, ``<state_N>``, ``<depth_N>``) on contiguous ids because the
model maps ``token_id - first_id`` to a bin. The BPE is trained on a fixed corpus so the vocabulary,
and therefore every token id in the model config, is the same on every build.
"""

from __future__ import annotations

import json
from pathlib import Path

NUM_ACTION_TOKENS = 256
NUM_STATE_TOKENS = 256
NUM_DEPTH_TOKENS = 128
BPE_VOCAB_SIZE = 512  # 256 byte symbols + up to 256 merges: enough to keep prompts short

# Qwen2's pre-tokenizer split (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)

EOS_TOKEN = "<|endoftext|>"


def special_tokens() -> list[str]:
    """MolmoAct2's special tokens in the order that keeps each numbered family contiguous."""
    tokens = [EOS_TOKEN, "<|im_start|>", "<|im_end|>"]
    tokens += [
        "<im_patch>", "<im_low>", "<im_start>", "<low_res_im_start>", "<frame_start>",
        "<im_end>", "<frame_end>", "<im_col>", "<|image|>", "<|video|>",
    ]  # fmt: skip
    tokens += ["<action_output>", "<action_start>", "<action_end>"]
    tokens += [f"<action_{i}>" for i in range(NUM_ACTION_TOKENS)]
    tokens += ["<state_start>", "<state_end>"]
    tokens += [f"<state_{i}>" for i in range(NUM_STATE_TOKENS)]
    tokens += ["<depth_output>", "<depth_start>", "<depth_end>"]
    tokens += [f"<depth_{i}>" for i in range(NUM_DEPTH_TOKENS)]
    tokens += ["<setup_start>", "<setup_end>", "<control_start>", "<control_end>"]
    return tokens


# A fixed corpus shaped like the prompts predict_action builds, so common words get merged.
_CORPUS = [
    "The task is to pick up the red cube and place it in the bowl.",
    "The task is to open the drawer. The setup is single arm so101.",
    "The current state of the robot is given. The expected control mode is absolute joint position.",
    "Given these, what action should the robot take to complete the task?",
    "Given these, first predict the depth map of the main image and then predict the action "
    "the robot should take to complete the task?",
    "Image 1 Image 2 Image 3 user assistant bimanual yam franka droid single arm so100 so101",
    "fold the towel, stack the blocks, push the button, wipe the table, put the cup on the plate",
    "move left, move right, move up, move down, grasp, release, rotate the gripper, close the lid",
    "0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


def build_tokenizer_files(out_dir: Path) -> dict[str, int]:
    """Train the BPE, write ``tokenizer.json`` and ``tokenizer_config.json``, return special-token ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    # Added after training so they get the ids right after the BPE vocabulary, in list order.
    tokens = special_tokens()
    tokenizer.add_special_tokens(tokens)
    ids = {tok: tokenizer.token_to_id(tok) for tok in tokens}
    _check_contiguous(ids)

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 32768,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": None,
        "bos_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
    }
    config_text = json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n"
    (out_dir / "tokenizer_config.json").write_text(config_text)
    return ids


def _check_contiguous(ids: dict[str, int]) -> None:
    families = (("action", NUM_ACTION_TOKENS), ("state", NUM_STATE_TOKENS), ("depth", NUM_DEPTH_TOKENS))
    for prefix, count in families:
        first = ids[f"<{prefix}_0>"]
        got = [ids[f"<{prefix}_{i}>"] for i in range(count)]
        if got != list(range(first, first + count)):
            # The model turns token ids into bins by subtracting the first id: a gap would shift bins.
            raise RuntimeError(f"tokenizer: <{prefix}_N> ids are not contiguous from {first}")
