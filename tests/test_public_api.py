"""The public names are few and pinned: adding or removing one is a deliberate change."""

import vgrpo

PUBLIC = {
    "CheckpointError",
    "DataError",
    "MissingPluginsError",
    "ModelAdapter",
    "NameConflictError",
    "ParamsError",
    "PluginError",
    "PluginLoadError",
    "PluginRegistry",
    "PromptTemplate",
    "Reward",
    "RewardFailure",
    "Sample",
    "Score",
    "Task",
    "TaskParams",
    "TrainingError",
    "UnknownNameError",
    "VgrpoError",
    "__version__",
    "extract_answer",
    "format_reward",
    "get_registry",
    "hookimpl",
    "is_well_formatted",
    "load_jsonl",
    "load_plugins",
    "reward",
    "score",
    "strip_code_fence",
}


def test_public_names_are_pinned():
    assert set(vgrpo.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(vgrpo, name), name


def test_every_error_is_a_vgrpo_error():
    for name in PUBLIC:
        obj = getattr(vgrpo, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, vgrpo.VgrpoError), name


def test_public_objects_are_documented():
    for name in PUBLIC - {"__version__"}:
        assert (getattr(vgrpo, name).__doc__ or "").strip(), f"{name} has no docstring"
