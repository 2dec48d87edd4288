"""Text-only causal language models: the processor vgrpo drives them through, and the embedded ``tiny-text``.

vgrpo calls a processor (``processor.tokenizer``, ``apply_chat_template``, ``processor(text=...)``,
``save_pretrained``); a text-only model ships a tokenizer alone, so :class:`TextProcessor` gives its tokenizer
those calls. Chat messages arrive in the multimodal form tasks build (``content`` a list of parts); a text model's
chat template usually wants plain strings, so the text parts are joined and an image part is an error.

``tiny-text`` is a tiny random-initialised Qwen2 causal LM with the tiny VLM's byte tokenizer, built in code (no
downloads). Its head size (64) is one vLLM's CPU attention accepts, so the vLLM backend is tested on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

TINY_TEXT = "tiny-text"


def text_messages(messages: Sequence[dict[str, Any]], where: str = "") -> list[dict[str, Any]]:
    """Chat messages with each ``content`` list joined into one string (text parts only); an image part
    raises a ValueError: a text-only model cannot see it."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    parts.append(str(part.get("text", "")))
                elif kind in ("image", "video"):
                    raise ValueError(
                        f"{where or 'a prompt'} has an {kind}, but the model is text-only: use a "
                        "vision-language model, or text-only records (no 'image' field)"
                    )
                else:
                    raise ValueError(f"{where or 'a prompt'}: unknown content part {part!r}")
            content = "".join(parts)
        out.append({**message, "content": content})
    return out


class TextProcessor:
    """A tokenizer with the processor calls vgrpo makes (for text-only models, which have no processor)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @property
    def chat_template(self) -> Any:
        return self.tokenizer.chat_template

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Any:
        """The tokenizer's chat template over the messages with their text parts joined."""
        return self.tokenizer.apply_chat_template(text_messages(messages), **kwargs)

    def __call__(self, text: Any = None, images: Any = None, **kwargs: Any) -> Any:
        """Tokenise ``text``; ``images`` must be empty (the model is text-only)."""
        if images:
            raise ValueError("the model is text-only: it cannot take images")
        return self.tokenizer(text, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> Any:
        """Write the tokenizer (what ``from_pretrained`` and any Hugging Face loader read back)."""
        return self.tokenizer.save_pretrained(path, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> TextProcessor:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(path, **kwargs))


def is_text_only(processor: Any) -> bool:
    """True when ``AutoProcessor`` gave a bare tokenizer: the folder holds a text-only model."""
    from transformers import PreTrainedTokenizerBase

    return isinstance(processor, PreTrainedTokenizerBase)


def load_causal_lm(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"
) -> tuple[Any, TextProcessor]:
    """(model, processor) of a text-only causal LM from a local folder or hub id."""
    from transformers import AutoModelForCausalLM

    processor = TextProcessor.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=dtype, attn_implementation=attn_implementation
    )
    return model, processor


def build_tiny_text_config(tokenizer: Any) -> Any:
    """The tiny text model's Qwen2 config: 2 layers, hidden 128, 2 heads of 64 (vLLM's CPU attention refuses
    the tiny VLM's head size of 16)."""
    from transformers import Qwen2Config

    from vgrpo.models.tiny import VOCAB_SIZE

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def build_tiny_text(seed: int = 0) -> tuple[Any, TextProcessor]:
    """(model, processor): the random-initialised tiny text model, deterministic for a seed."""
    from transformers import Qwen2ForCausalLM

    from vgrpo.models.tiny import build_tokenizer

    processor = TextProcessor(build_tokenizer())
    config = build_tiny_text_config(processor.tokenizer)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model, processor


def save_tiny_text(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny text model and its tokenizer as a normal Hugging Face checkpoint folder."""
    model, processor = build_tiny_text(seed)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
