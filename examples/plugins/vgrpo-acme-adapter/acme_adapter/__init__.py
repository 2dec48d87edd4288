"""vgrpo-acme-adapter: an example model-adapter plugin for LLaVA-1.5-style vision-language models.

It provides no task and no reward: its ``vgrpo_model_adapters`` hook registers :class:`LlavaAdapter`
(``acme.llava``), which ``model.adapter: auto`` picks for any checkpoint whose config says
``model_type: llava``. ``build_tiny_llava`` builds a tiny random LLaVA in code for tests.
"""

from __future__ import annotations

import vgrpo
from acme_adapter.adapter import LlavaAdapter
from acme_adapter.tiny import build_tiny_llava, save_tiny_llava

__all__ = ["LlavaAdapter", "build_tiny_llava", "save_tiny_llava"]


@vgrpo.hookimpl
def vgrpo_model_adapters() -> list[vgrpo.ModelAdapter]:
    """``acme.llava``: LLaVA-1.5 (``model_type: llava``)."""
    return [LlavaAdapter()]
