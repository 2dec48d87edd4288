"""Task params, templates and the JSONL dataset adapter."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

import vgrpo
from vgrpo.data import load_jsonl


class Params(vgrpo.TaskParams):
    coords: Literal["abs", "norm1000"] = Field("abs", description="coordinate convention")
    threshold: float = Field(0.5, gt=0, le=1)


class Box(vgrpo.Task):
    name = "box"
    description = "box"
    Params = Params
    template = vgrpo.PromptTemplate(user="{question} (coords: {coords})", system="You are {id}.")
    rewards = (vgrpo.format_reward,)
    default_weights = {"format": 1.0}

    def parse(self, completion, params):
        return None

    def check_solution(self, solution):
        if not (isinstance(solution, list) and len(solution) == 4):
            raise ValueError(f"expected [x1, y1, x2, y2], got {solution!r}")
        return solution

    def metric(self, predictions, samples, params):
        return {}


def test_params_errors_name_the_key_and_the_valid_params():
    with pytest.raises(vgrpo.ParamsError) as info:
        Box().params({"coords": "pixels"})
    msg = str(info.value)
    assert "coords" in msg and "'abs'" in msg and "threshold (default 0.5)" in msg
    with pytest.raises(vgrpo.ParamsError, match="thresold.*Extra inputs"):
        Box().params({"thresold": 0.3})
    assert Box().params({"threshold": 0.7}).threshold == 0.7


def test_template_renders_chat_messages_with_image_slots():
    sample = vgrpo.Sample(id="s1", question="Find the dog.", images=("a.png", "b.png"))
    messages = Box().build_prompt(sample, Box().params({"coords": "norm1000"}))
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "You are s1."}]}
    assert messages[1]["content"] == [
        {"type": "image", "image": "a.png"},
        {"type": "image", "image": "b.png"},
        {"type": "text", "text": "Find the dog. (coords: norm1000)"},
    ]


def test_template_missing_field_is_named():
    tpl = vgrpo.PromptTemplate(user="{question} {colour}")
    with pytest.raises(KeyError, match="'colour'"):
        tpl.render(vgrpo.Sample(id="x"), vgrpo.TaskParams())


def write(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_load_jsonl_resolves_images_and_keeps_extras(tmp_path):
    f = write(
        tmp_path / "d.jsonl",
        [
            {
                "id": 7,
                "image": "img/a.png",
                "question": "q",
                "solution": [0, 0, 1, 1],
                "image_size": [640, 480],
            },
            "",
            {"image": ["x.png", "y.png"], "solution": [1, 2, 3, 4], "difficulty": "hard"},
            {"question": "text only", "solution": [1, 2, 3, 4]},
        ],
    )
    a, b, c = load_jsonl(f, Box())
    assert a.id == "7" and a.images == (str(tmp_path / "img/a.png"),) and a.image_size == (640.0, 480.0)
    assert b.id == "d-3" and len(b.images) == 2 and b.extra == {"difficulty": "hard"}
    assert c.images == ()


@pytest.mark.parametrize(
    "record, line, field, expected",
    [
        ('{"solution": [1, 2]}', 2, "solution", "expected [x1, y1, x2, y2]"),
        ('{"question": "q"}', 2, "solution", "missing"),
        ('{"solution": [1,2,3,4], "image_size": [0, 10]}', 2, "image_size", "two positive numbers"),
        ('{"solution": [1,2,3,4], "image": 5}', 2, "image", "a path or a list of paths"),
        ('{"solution": [1,2,3,4], "question": ["q"]}', 2, "question", "expected a string"),
        ("[1, 2]", 2, None, "expected a JSON object"),
        ('{"solution": ', 2, None, "invalid JSON"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, record, line, field, expected):
    f = write(tmp_path / "bad.jsonl", ['{"solution": [0, 0, 1, 1]}', record])
    with pytest.raises(vgrpo.DataError) as info:
        load_jsonl(f, Box())
    err = info.value
    assert (err.file, err.line, err.field) == (str(f), line, field)
    assert expected in str(err) and f"bad.jsonl:{line}" in str(err)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(vgrpo.DataError, match="cannot open"):
        load_jsonl(tmp_path / "nope.jsonl", Box())


def test_image_size_is_read_from_the_image_when_absent(tmp_path):
    from PIL import Image

    Image.new("RGB", (37, 21)).save(tmp_path / "a.png")
    f = write(tmp_path / "d.jsonl", [{"image": "a.png", "solution": [0, 0, 1, 1]}])
    [s] = load_jsonl(f, Box(), read_sizes=True)
    assert s.image_size == (37.0, 21.0)


# -- a record missing a template field is a data error ----------------------------------------------------
def test_template_missing_field_is_a_data_error_naming_record_field_and_available_fields():
    from vgrpo.errors import TemplateFieldError

    tpl = vgrpo.PromptTemplate(user="{question} Candidates: {classes}")
    with pytest.raises(TemplateFieldError) as info:
        tpl.render(vgrpo.Sample(id="r7", question="q", extra={"colour": "red"}), vgrpo.TaskParams())
    err = info.value
    assert isinstance(err, vgrpo.DataError) and isinstance(err, KeyError)
    assert err.field == "classes"
    msg = str(err)
    assert msg.startswith("field 'classes': missing") and "'r7'" in msg
    assert "available: colour, id, question, require_answer_tags" in msg


# -- templates: one rule for list and dict fields; scalars as str.format -----------------------------------
def render_text(user, question="Which shape?", **extra):
    sample = vgrpo.Sample(id="s", question=question, extra=extra)
    return vgrpo.PromptTemplate(user=user).render(sample, vgrpo.TaskParams())[-1]["content"][-1]["text"]


@pytest.mark.parametrize(
    "user, extra, text",
    [
        ("{classes}", {"classes": ["circle", "square"]}, "circle, square"),
        ("{classes:numbered}", {"classes": ["circle", "square"]}, "1. circle\n2. square"),
        ("{classes:lines}", {"classes": ["circle", "square"]}, "circle\nsquare"),
        ("{classes:json}", {"classes": ["circle", "square"]}, '["circle", "square"]'),
        ("{classes!r}", {"classes": ["circle", "square"]}, "['circle', 'square']"),
        ("{classes[1]}", {"classes": ["circle", "square"]}, "square"),
        ("{classes}", {"classes": []}, ""),
        ("{n}", {"n": [1, 2.5, True, None]}, "1, 2.5, True, None"),
        ("{boxes}", {"boxes": [[1, 2], {"a": "é"}]}, '[1, 2], {"a": "é"}'),
        ("{attrs}", {"attrs": {"colour": "red", "size": 3}}, "colour: red, size: 3"),
        ("{attrs:numbered}", {"attrs": {"colour": "red", "size": 3}}, "1. colour: red\n2. size: 3"),
        ("{attrs:json}", {"attrs": {"colour": "red"}}, '{"colour": "red"}'),
        ("{word:json}", {"word": "yes"}, '"yes"'),
    ],
)
def test_list_and_dict_fields_render_by_one_rule(user, extra, text):
    assert render_text(user, **extra) == text


@pytest.mark.parametrize(
    "user, extra",
    [
        ("{question} {id} {{literal}}", {}),
        ("{k:03d} {x:.2f} {w:>6} {flag} {none}", {"k": 7, "x": 0.5, "w": "ab", "flag": False, "none": None}),
        ("{question!r} {require_answer_tags}", {}),
    ],
)
def test_scalar_fields_render_exactly_as_str_format(user, extra):
    values = {"require_answer_tags": True, **extra, "id": "s", "question": "Which shape?"}
    assert render_text(user, **extra) == user.format_map(values)


@pytest.mark.parametrize(
    "user, extra, fragment",
    [
        (
            "{classes:>10}",
            {"classes": ["a"]},
            "{classes:>10}, an unknown form for a list; expected one of "
            "{classes}, {classes:numbered}, {classes:lines}, {classes:json}",
        ),
        (
            "{classes:numbered}",
            {"classes": "circle"},
            "{classes:numbered}, which expects a list or a dict, got str",
        ),
    ],
)
def test_a_form_that_does_not_fit_the_value_is_a_data_error_naming_the_field(user, extra, fragment):
    with pytest.raises(vgrpo.DataError) as info:
        render_text(user, **extra)
    assert info.value.field == "classes" and fragment in str(info.value)


def test_builtin_prompts_are_unchanged_for_scalar_fields():
    registry = vgrpo.get_registry()
    for name in ("rec", "ovd", "count", "math"):
        task = registry.task(name)
        sample = vgrpo.data.sample_from_record(task.example, task)
        values = {**task.params().model_dump(), **sample.fields()}
        text = task.template.render(sample, task.params())[-1]["content"][-1]["text"]
        assert text == task.template.user.format_map(values), name


# -- check_record: the whole record, run by the loaders ------------------------------------------------------
class Shapes(vgrpo.Task):
    """A classification task written against the 0.1 contract: no check_record, a two-argument parse."""

    name = "shapes"
    description = "shapes"
    template = vgrpo.PromptTemplate(user="{question} Candidates: {classes}")
    rewards = (vgrpo.format_reward,)
    default_weights = {"format": 1.0}

    def parse(self, completion, params):
        return completion.strip() or None

    def check_solution(self, solution):
        if not isinstance(solution, str):
            raise ValueError(f"expected a class name, got {solution!r}")
        return solution

    def metric(self, predictions, samples, params):
        return {}


class CheckedShapes(Shapes):
    name = "checked_shapes"

    def check_record(self, record, params):
        super().check_record(record, params)
        if record["solution"] not in record["classes"]:
            classes, solution = record["classes"], record["solution"]
            raise ValueError(f"expected the solution to be one of {classes}, got {solution!r}")


def test_the_default_check_record_checks_the_solution_and_the_template():
    task, params = Shapes(), Shapes().params()
    task.check_record({"solution": "circle", "classes": ["circle", "square"]}, params)
    with pytest.raises(ValueError, match="expected a class name"):
        task.check_record({"solution": 3, "classes": ["circle"]}, params)
    with pytest.raises(vgrpo.DataError, match="field 'classes': missing; the prompt template needs it"):
        task.check_record({"solution": "circle"}, params)


def test_loading_checks_every_record_whole_and_names_file_and_line(tmp_path):
    good = {"solution": "circle", "classes": ["circle", "square"]}
    f = write(tmp_path / "d.jsonl", [good, {"id": "b", "solution": "circle"}])
    with pytest.raises(vgrpo.DataError) as info:  # the 0.1 task: the default check finds the template field
        load_jsonl(f, Shapes())
    err = info.value
    assert (err.file, err.line, err.field) == (str(f), 2, "classes") and "record 'b'" in str(err)
    f = write(tmp_path / "d.jsonl", [good, {**good, "solution": "star"}])
    assert len(load_jsonl(f, Shapes())) == 2
    with pytest.raises(vgrpo.DataError) as info:  # the task's own check
        load_jsonl(f, CheckedShapes())
    err = info.value
    assert (err.line, err.field) == (2, None)
    assert str(err) == (
        f"{f}:2: expected the solution to be one of ['circle', 'square'], got 'star' (task 'checked_shapes')"
    )


def test_check_record_gets_the_params_and_a_plugin_bug_is_reported_as_the_record_problem(tmp_path):
    seen = []

    class Strict(Shapes):
        name = "strict"

        def check_record(self, record, params):
            seen.append(params)
            return record["classes"][5]  # IndexError: a bug in the plugin, reported, never raised

    f = write(tmp_path / "d.jsonl", [{"solution": "circle", "classes": ["circle"]}])
    problems = vgrpo.data.check_jsonl(f, Strict(), params={"require_answer_tags": False})
    assert seen == [Strict().params({"require_answer_tags": False})]
    assert [(p.line, p.reason) for p in problems] == [
        (1, "task 'strict': checking the record raised IndexError: list index out of range")
    ]


def test_check_task_runs_the_tasks_check_record_on_its_examples():
    from vgrpo.testing import check_task

    class Cls(CheckedShapes):
        name = "acme.cls"
        example = {"id": "0", "question": "Which?", "solution": "star", "classes": ["circle", "square"]}
        example_completion = "square"
        metric_names = ("accuracy",)

        def metric(self, predictions, samples, params):
            return {"accuracy": 1.0}

    with pytest.raises(
        AssertionError, match="check_record refuses a record.*expected the solution to be one"
    ):
        check_task(Cls, fuzz=5)


# -- the plugin guide's rule table and snippets (docs/plugins/writing-a-task.md) run as written -------------
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "writing-a-task.md"


def guide_block(name):
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)\n```", text, re.DOTALL)
    assert match, f"no '<!-- example: {name} -->' python block in {GUIDE.name}"
    return textwrap.dedent(match.group(1))


def test_the_guides_template_rule_table_holds():
    text = GUIDE.read_text(encoding="utf-8").split("<!-- template-rule -->", 1)[1]
    rows = re.findall(r"^\| `(\{.*?\})` \| `(.*?)` \| `(.*?)` \|$", text.split("\n\n", 1)[0], re.MULTILINE)
    assert len(rows) >= 8
    for placeholder, value, want in rows:
        name = re.match(r"\{(\w+)", placeholder).group(1)
        got = render_text(placeholder, **{name: json.loads(value)})
        assert got == json.loads(want), placeholder


def test_the_guides_template_example_runs():
    exec(guide_block("template"), {"vgrpo": vgrpo})  # its assert states the rendered messages


def test_the_guides_check_record_and_parse_snippets_work_in_a_task(tmp_path):
    body = textwrap.indent(guide_block("check_record") + "\n\n" + guide_block("parse"), "    ")
    namespace = {"vgrpo": vgrpo, "Shapes": Shapes}
    exec(f"class Guide(Shapes):\n    name = 'acme.guide'\n{body}\n", namespace)
    task = namespace["Guide"]()
    good = {"solution": "square", "classes": ["circle", "square"]}
    bad = [{"solution": "square", "classes": []}, {**good, "solution": "star"}]
    f = write(tmp_path / "d.jsonl", [good, *bad])
    problems = vgrpo.data.check_jsonl(f, task)
    assert [(p.line, p.field) for p in problems] == [(2, "classes"), (3, "solution")]
    [sample] = load_jsonl(write(tmp_path / "ok.jsonl", [good]), task)
    [result] = vgrpo.score(task, ["<think>.</think><answer>2</answer>"], [sample], weights={"format": 1.0})
    assert result.parsed == "square"
    assert task.parse("<answer>circle</answer>", task.params()) is None  # no sample: no candidates


def test_check_task_gives_a_parser_that_asks_for_it_the_sample():
    from vgrpo.testing import check_task

    class Pick(Shapes):
        name = "acme.pick"
        example = {"id": "0", "question": "Which?", "solution": "square", "classes": ["circle", "square"]}
        example_completion = "2"
        metric_names = ("accuracy",)

        def parse(self, completion, params, sample=None):
            classes = sample.extra.get("classes", []) if sample is not None else []
            text = completion.strip()
            return classes[int(text) - 1] if text.isdigit() and 0 < int(text) <= len(classes) else None

        def metric(self, predictions, samples, params):
            hits = [p == s.solution for p, s in zip(predictions, samples)]
            return {"accuracy": sum(hits) / len(hits) if hits else 0.0}

    check_task(Pick, fuzz=20)
