"""A tiny, randomly initialised LLaVA-1.5-architecture model built in code: CLIP vision tower, MLP projector,
Llama language model. No downloads, no torchvision (the PIL image processor, not the "fast" one).

It exists so the adapter can be tested in seconds on a CPU; ``save_tiny_llava`` writes it as an ordinary
Hugging Face checkpoint folder, which then loads through the normal ``from_pretrained`` path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", IMAGE_TOKEN)
VOCAB_SIZE = 272  # 256 bytes + 4 special tokens, padded to a multiple of 16
#: The side of the square the vision tower sees; 56 / patch 14 → 16 patches → 16 image tokens per image.
IMAGE_SIDE, PATCH = 56, 14
#: LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), written for vgrpo's chat messages.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% elif message['role'] == 'system' %}{% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer() -> Any:
    """A byte-level fast tokenizer with LLaVA's special tokens (``<image>`` among them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN],
        chat_template=CHAT_TEMPLATE,
    )


def build_processor() -> Any:
    """Tokenizer + LLaVA's PIL image processor. Images are resized to the whole square (no centre crop, no
    padding), so a fraction of the model input is the same fraction of the original image."""
    from transformers import LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    square = {"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    images = LlavaImageProcessorPil(size=square, crop_size=square, do_center_crop=False, do_pad=False)
    return LlavaProcessor(
        image_processor=images,
        tokenizer=build_tokenizer(),
        patch_size=PATCH,
        chat_template=CHAT_TEMPLATE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS, dropped
    )


def build_config(tokenizer: Any) -> Any:
    from transformers import LlavaConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIDE,
            "patch_size": PATCH,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "tie_word_embeddings": False,
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["</s>"],
            "pad_token_id": ids["<pad>"],
        },
        image_token_id=ids[IMAGE_TOKEN],
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        pad_token_id=ids["<pad>"],
    )


def build_tiny_llava(seed: int = 0) -> tuple[Any, Any]:
    """(model, processor): a random-initialised tiny LLaVA, the same for the same seed."""
    from transformers import LlavaForConditionalGeneration

    processor = build_processor()
    config = build_config(processor.tokenizer)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model, processor


def save_tiny_llava(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny LLaVA and its processor as a Hugging Face checkpoint folder (``model_type: llava``)."""
    model, processor = build_tiny_llava(seed)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
