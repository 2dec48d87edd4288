"""The model-adapter contract is pinned: the methods of ``vgrpo.ModelAdapter``, their parameters (name, kind,
default), what they return, the class attributes, the selection functions and the typed hook. Changing any of
it is a deliberate change here and in docs/plugins/writing-a-model-adapter.md; adding optional methods or
arguments with defaults keeps third-party adapters working (the contract grows the pluggy way)."""

from __future__ import annotations

import inspect
import typing
from inspect import Parameter

import pytest
import torch

import vgrpo
from vgrpo import hookspecs
from vgrpo.models import adapters as adapters_module
from vgrpo.models.adapters import BUILTIN_ADAPTERS, ModelAdapter, adapter_for, select_adapter

P, K = Parameter.POSITIONAL_OR_KEYWORD, Parameter.KEYWORD_ONLY
REQUIRED = Parameter.empty

#: method -> [(parameter, kind, default)], ``self`` left out (``model_type`` is a staticmethod).
METHODS: dict[str, list[tuple[str, typing.Any, typing.Any]]] = {
    "model_type": [("source", P, REQUIRED)],
    "handles": [("model_type", P, REQUIRED)],
    "processor_kwargs": [("min_pixels", P, REQUIRED), ("max_pixels", P, REQUIRED)],
    "load": [
        ("name_or_path", P, REQUIRED),
        ("dtype", K, torch.float32),
        ("attn_implementation", K, "sdpa"),
        ("min_pixels", K, None),
        ("max_pixels", K, None),
        ("seed", K, 0),
    ],
    "prepare": [("model", P, REQUIRED), ("every_rank_runs_vision", K, False)],
    "runs_vision_every_forward": [("model", P, REQUIRED)],
    "vision_parameters": [("model", P, REQUIRED)],
    "encode": [
        ("processor", P, REQUIRED),
        ("prompts", P, REQUIRED),
        ("images", P, REQUIRED),
        ("group_size", K, 1),
    ],
    "input_sizes": [("processor", P, REQUIRED), ("inputs", P, REQUIRED), ("images", P, REQUIRED)],
    "hidden_states": [("model", P, REQUIRED), ("inputs", P, REQUIRED)],
    "lm_head": [("model", P, REQUIRED)],
    "output_layer": [("model", P, REQUIRED)],  # the older name of lm_head, kept for compatibility
    "supports_shared_prefix": [("model", P, REQUIRED)],  # optional (0.3): the shared-prefix pair
    "shared_prefix_hidden": [
        ("model", P, REQUIRED),
        ("prompts", P, REQUIRED),
        ("counts", P, REQUIRED),
        ("completion_ids", P, REQUIRED),
        ("completion_mask", P, REQUIRED),
    ],
    "generation_prefix": [("model", P, REQUIRED), ("prompts", P, REQUIRED), ("counts", P, REQUIRED)],
}

#: What each method returns, as annotated.
RETURNS = {
    "model_type": "str",
    "handles": "bool",
    "processor_kwargs": "dict[str, Any]",
    "load": "tuple[Any, Any]",
    "prepare": "None",
    "runs_vision_every_forward": "bool",
    "vision_parameters": "list[tuple[str, torch.nn.Parameter]]",
    "encode": "Any",
    "input_sizes": "list[tuple[float, float] | None]",
    "hidden_states": "torch.Tensor",
    "lm_head": "torch.nn.Module",
    "output_layer": "torch.nn.Module",
    "supports_shared_prefix": "bool",
    "shared_prefix_hidden": "torch.Tensor",
    "generation_prefix": "dict[str, Any] | None",
}

#: Class attributes and the generic adapter's values.
ATTRIBUTES = {"name": "generic", "model_types": (), "default_coords": "abs"}
COORDS = {"abs", "norm1000", "norm1"}


def _parameters(fn: typing.Any) -> list[tuple[str, typing.Any, typing.Any]]:
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    return [(p.name, p.kind, p.default) for p in params]


def test_vgrpo_exports_the_adapter_class():
    assert vgrpo.ModelAdapter is ModelAdapter
    assert "ModelAdapter" in vgrpo.__all__


def test_the_public_methods_are_exactly_the_pinned_ones():
    public = {
        n
        for n, v in vars(ModelAdapter).items()
        if not n.startswith("_") and callable(v.__func__ if isinstance(v, (staticmethod, classmethod)) else v)
    }
    assert public == set(METHODS), "a new or removed ModelAdapter method: update METHODS and the docs page"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_keeps_its_parameters(method):
    assert _parameters(getattr(ModelAdapter, method)) == METHODS[method]


@pytest.mark.parametrize("method", sorted(RETURNS))
def test_each_method_keeps_its_return_type(method):
    assert inspect.signature(getattr(ModelAdapter, method)).return_annotation == RETURNS[method]


def test_model_type_is_a_staticmethod_that_knows_the_tiny_model():
    assert isinstance(inspect.getattr_static(ModelAdapter, "model_type"), staticmethod)
    assert ModelAdapter.model_type("tiny") == "qwen2_5_vl"  # no config read, no download


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_has_a_docstring(method):
    doc = inspect.getdoc(getattr(ModelAdapter, method))
    assert (doc or "").strip(), f"ModelAdapter.{method}: no docstring"


def test_the_class_and_the_selection_functions_have_docstrings():
    for obj in (ModelAdapter, select_adapter, adapter_for, adapters_module):
        assert (inspect.getdoc(obj) or "").strip(), obj


def test_the_class_attributes_and_the_generic_values():
    hints = typing.get_type_hints(ModelAdapter)
    for attr, value in ATTRIBUTES.items():
        assert typing.get_origin(hints[attr]) is typing.ClassVar, attr
        assert getattr(ModelAdapter, attr) == value, attr
    assert typing.get_args(hints["default_coords"]) == (str,)
    assert typing.get_args(hints["model_types"]) == (tuple[str, ...],)


@pytest.mark.parametrize("adapter", BUILTIN_ADAPTERS, ids=lambda a: a.name)
def test_the_builtin_adapters_keep_the_signatures_and_a_known_convention(adapter):
    assert isinstance(adapter, ModelAdapter) and adapter.name
    assert adapter.default_coords in COORDS
    for method, params in METHODS.items():
        assert _parameters(getattr(type(adapter), method)) == params, f"{adapter.name}.{method}"


def test_the_selection_functions_keep_their_signatures():
    assert _parameters(select_adapter) == [
        ("adapters", P, REQUIRED),
        ("name", P, REQUIRED),
        ("model_type", P, REQUIRED),
    ]
    assert _parameters(adapter_for) == [
        ("adapters", P, REQUIRED),
        ("name", P, REQUIRED),
        ("source", P, REQUIRED),
    ]
    assert inspect.signature(select_adapter).return_annotation == "ModelAdapter"
    assert inspect.signature(adapter_for).return_annotation == "ModelAdapter"


def test_an_unknown_adapter_name_raises_the_documented_error():
    adapters = {a.name: a for a in BUILTIN_ADAPTERS}
    with pytest.raises(vgrpo.UnknownNameError, match="unknown model adapter 'qwen9'.*installed:"):
        select_adapter(adapters, "qwen9", "qwen2_vl")
    with pytest.raises(vgrpo.UnknownNameError):
        adapter_for(adapters, "qwen9", "tiny")
    assert issubclass(vgrpo.UnknownNameError, vgrpo.PluginError)


def test_auto_picks_by_model_type_and_falls_back_to_the_generic_adapter():
    adapters = {a.name: a for a in BUILTIN_ADAPTERS}
    assert select_adapter(adapters, "auto", "qwen2_vl").name == "qwen2_vl"
    assert select_adapter(adapters, "auto", "some_new_family").name == "generic"
    assert select_adapter(adapters, "qwen3_vl", "qwen2_vl").name == "qwen3_vl"  # a name wins over the type
    assert adapter_for(adapters, "auto", "tiny").name == "qwen2_5_vl"


def test_the_hook_is_typed_to_return_model_adapters():
    spec = hookspecs.vgrpo_model_adapters
    assert hasattr(spec, f"{hookspecs.PROJECT}_spec")
    assert inspect.signature(spec).parameters == {}  # implementations take no arguments (they may grow)
    hint = typing.get_type_hints(spec, localns={"ModelAdapter": ModelAdapter})["return"]
    assert typing.get_origin(hint) is list and typing.get_args(hint) == (ModelAdapter,)
    assert "ModelAdapter" in (inspect.getdoc(spec) or "")


def test_a_subclass_that_overrides_only_the_old_output_layer_name_still_gives_lm_head():
    head = torch.nn.Linear(4, 8, bias=False)

    class Old(ModelAdapter):
        name = "old"

        def output_layer(self, model):
            return head

    assert Old().lm_head(object()) is head
