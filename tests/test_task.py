"""Task params, templates and the JSONL dataset adapter."""

from __future__ import annotations

import json
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
            {"id": 7, "image": "img/a.png", "question": "q", "solution": [0, 0, 1, 1], "image_size": [640, 480]},
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
