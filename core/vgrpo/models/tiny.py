"""The embedded default model: a tiny, randomly initialised Qwen2.5-VL built in code, with no downloads.

Its tokenizer is byte-level (256 byte tokens, Qwen's special tokens, and the think/answer tags as single
tokens so the format reward is learnable in a CPU-sized run); its image processor is transformers' PIL one,
so neither torchvision nor a video processor is needed.

The processor is transformers' stock ``PaddleOCRVLProcessor``: a tokenizer plus an image processor that
expands each image placeholder into one token per merged patch exactly as Qwen2.5-VL's processor does, and
nothing else. Qwen2.5-VL's own processor class always loads a video processor, which needs torchvision, so a
folder naming it cannot be loaded without torchvision. A folder naming ``PaddleOCRVLProcessor`` loads with a
plain ``AutoProcessor.from_pretrained(folder)`` anywhere, no vgrpo code needed (its image processor type,
``Qwen2VLImageProcessor``, resolves to the PIL class when torchvision is absent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
VOCAB_SIZE = 272  # 256 bytes + 7 special + 4 tags, padded to a multiple of 16
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Image area bounds (pixels) of the tiny model: 224×224 scenes become 8×8 patches → 16 visual tokens.
MIN_PIXELS, MAX_PIXELS = 28 * 28, 112 * 112


#: The named tokens a Qwen-VL style processor reads from its tokenizer (``tokenizer.image_token``, ...).
VISION_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}


def _processor_class() -> type:
    """The image-only processor class (see the module docstring): stock transformers, so that what vgrpo saves
    loads back with ``AutoProcessor`` without torchvision."""
    from transformers import PaddleOCRVLProcessor

    return PaddleOCRVLProcessor


def build_tokenizer() -> Any:
    """A byte-level fast tokenizer with Qwen's special tokens and the think/answer tags."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    # the special tokens first, in their historical order (ids 256…), so naming some below moves no id
    core.add_special_tokens(list(dict.fromkeys(("<|im_end|>", "<|endoftext|>", *SPECIAL_TOKENS))))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
        chat_template=CHAT_TEMPLATE,
        **VISION_TOKENS,  # named tokens (tokenizer.image_token, saved in tokenizer_config.json)
    )
    tok.add_tokens(list(TAG_TOKENS))
    assert len(tok) <= VOCAB_SIZE, len(tok)
    return tok


def build_processor() -> Any:
    """Tokenizer + PIL image processor as one image-only Qwen2.5-VL-style processor (``AutoProcessor`` reads
    it back from a saved folder)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    images = Qwen2VLImageProcessorPil(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})
    tokenizer = build_tokenizer()
    return _processor_class()(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


#: The tiny vision tower shared by the Qwen2.5-VL and Qwen3-VL builds (Qwen2-VL's names its sizes differently).
VISION = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}


def build_config(tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
            "tie_word_embeddings": False,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={**VISION, "window_size": 56, "fullatt_block_indexes": [1]},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def build_qwen2_vl_config(tokenizer: Any) -> Any:
    """The tiny model's sizes in Qwen2-VL's architecture (its vision tower has no window attention)."""
    from transformers import Qwen2VLConfig

    base = build_config(tokenizer).to_dict()
    return Qwen2VLConfig(
        text_config={
            k: v for k, v in base["text_config"].items() if not k.startswith("_") and k != "model_type"
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **{
            k: base[k]
            for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        },
        # transformers before 5.24 keeps these in the text config only
        **{k: base.get(k, base["text_config"][k]) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )


def build_qwen3_vl_config(tokenizer: Any) -> Any:
    """The tiny model's sizes in Qwen3-VL's architecture (deepstack features from vision layer 0; patch 14 like
    the others, so the same image processor serves it)."""
    from transformers import Qwen3VLConfig

    base = build_config(tokenizer).to_dict()
    text = {k: v for k, v in base["text_config"].items() if not k.startswith("_") and k != "model_type"}
    text.pop("rope_scaling", None)
    text.pop("rope_parameters", None)
    text.update(
        head_dim=16,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 4], "mrope_interleaved": True},
    )
    return Qwen3VLConfig(
        text_config=text,
        vision_config={**VISION, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
        **{
            k: base[k]
            for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        },
        tie_word_embeddings=False,
    )


#: Families the tiny model can be built in: ``config.model_type`` → (config builder, model class name).
FAMILIES = {
    "qwen2_5_vl": (build_config, "Qwen2_5_VLForConditionalGeneration"),
    "qwen2_vl": (build_qwen2_vl_config, "Qwen2VLForConditionalGeneration"),
    "qwen3_vl": (build_qwen3_vl_config, "Qwen3VLForConditionalGeneration"),
}


def build_tiny(seed: int = 0, family: str = "qwen2_5_vl") -> tuple[Any, Any]:
    """(model, processor): a random-initialised tiny model, deterministic for a seed; ``family`` names the
    architecture (``qwen2_5_vl``, the embedded default, ``qwen2_vl`` or ``qwen3_vl``)."""
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"tiny model family: expected one of {sorted(FAMILIES)}, got {family!r}")
    make_config, class_name = FAMILIES[family]
    processor = build_processor()
    config = make_config(processor.tokenizer)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = getattr(transformers, class_name)(config)
    finally:
        torch.random.set_rng_state(state)
    text = getattr(config, "text_config", config)  # Qwen3-VL keeps the special ids in its text config only
    model.generation_config.eos_token_id = getattr(config, "eos_token_id", None) or text.eos_token_id
    model.generation_config.pad_token_id = getattr(config, "pad_token_id", None) or text.pad_token_id
    return model, processor


def save_tiny(path: str | Path, seed: int = 0, family: str = "qwen2_5_vl") -> Path:
    """Write the tiny model (of ``family``, see :func:`build_tiny`) and its processor as a normal Hugging Face
    checkpoint folder."""
    model, processor = build_tiny(seed, family)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def load_image_only_processor(path: str | Path, **image_processor_kwargs: Any) -> Any:
    """A Qwen2/2.5/3-VL-style processor from a folder, without the video processor (no torchvision needed).

    For folders ``AutoProcessor`` cannot read without torchvision (a Qwen-VL model's own, whose processor
    wants a video processor) and for vgrpo checkpoints written before their processor was saved as a stock
    class (``ImageOnlyQwen2_5_VLProcessor``); what it returns saves as a folder ``AutoProcessor`` reads.
    ``image_processor_kwargs`` (e.g. ``min_pixels``) go to the image processor.
    """
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = tokenizer.get_vocab()
    unnamed = {k: t for k, t in VISION_TOKENS.items() if not getattr(tokenizer, k, None) and t in vocab}
    if unnamed:  # older vgrpo checkpoints, Qwen's own tokenizers: the processor reads tokenizer.image_token
        tokenizer = AutoTokenizer.from_pretrained(path, **unnamed)
    images = Qwen2VLImageProcessorPil.from_pretrained(path, **image_processor_kwargs)
    chat_template = tokenizer.chat_template
    return _processor_class()(image_processor=images, tokenizer=tokenizer, chat_template=chat_template)


load_tiny_processor = load_image_only_processor
