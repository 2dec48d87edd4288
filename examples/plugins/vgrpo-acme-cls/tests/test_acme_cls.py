"""acme.cls: the contract, parsing by name and by number, the metric by hand, and check_record's refusals."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import vgrpo
from acme_cls import ClsTask, macro_accuracy, resolve
from acme_cls.data import CLASSES, write_dataset
from vgrpo.data import check_jsonl
from vgrpo.testing import call_reward, check_task

TASK = ClsTask()
PARAMS = TASK.params()
CLASSES_3 = ["circle", "square", "triangle"]
SAMPLE = vgrpo.Sample(id="s", solution="square", extra={"classes": CLASSES_3})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_dataset(tmp_path_factory.mktemp("cls"), n_train=12, n_val=6, seed=0)


def test_plugin_is_installed_and_registered():
    registry = vgrpo.load_plugins()
    assert registry.task("acme.cls").name == "acme.cls"
    assert registry.owner("task", "acme.cls")[0] == "vgrpo-acme-cls"


def test_the_task_honours_the_plugin_contract(dataset):
    records = [json.loads(line) for line in dataset["train"].read_text(encoding="utf-8").splitlines()]
    by_name = [(r, f"<think>I see it.</think><answer>{r['solution']}</answer>") for r in records]
    by_number = [
        (r, f"<think>I see it.</think><answer>{r['classes'].index(r['solution']) + 1}</answer>")
        for r in records
    ]
    check_task(TASK, examples=by_name + by_number, params=[{"allow_number": False}])


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("square", "square"),
        ("  Square. ", "square"),  # case, spacing and a final full stop are ignored
        ("2", "square"),  # the candidate's number in the record's list
        ("2.", "square"),
        ("(2)", "square"),
        ("2. square", "square"),
        ("2. circle", None),  # the number and the name disagree
        ("3", "triangle"),
        ("0", None),
        ("4", None),  # out of the list
        ("hexagon", None),  # not a candidate of this record
        ("a square", None),
        ("", None),
    ],
)
def test_parse_resolves_a_name_or_a_number_with_the_sample(answer, expected):
    assert TASK.parse(f"<think>t</think><answer>{answer}</answer>", PARAMS, sample=SAMPLE) == expected


def test_numbers_can_be_turned_off_and_the_sample_is_optional():
    no_numbers = TASK.params({"allow_number": False})
    assert TASK.parse("<answer>2</answer>", no_numbers, sample=SAMPLE) is None
    assert TASK.parse("<answer>Square</answer>", PARAMS) == "square"  # no sample: the name as written
    assert TASK.parse("square", PARAMS, sample=SAMPLE) is None  # no answer block
    assert resolve("Big Square", ["big  square"]) == "big  square"  # returned as the record writes it


def test_the_parsed_candidate_reaches_the_rewards():
    # call_reward parses with the task's parser, passing the sample, as training does
    record = {**TASK.example, "classes": CLASSES_3, "solution": "triangle"}
    assert call_reward("accuracy", task=TASK, sample=record, completion="<answer>3</answer>") == 1.0
    assert call_reward("accuracy", task=TASK, sample=record, completion="<answer>1</answer>") == 0.0
    [result] = vgrpo.score(TASK, ["<think>t</think><answer>3</answer>"], [SAMPLE])
    assert result.parsed == "triangle" and result.rewards == {"accuracy": 0.0, "format": 1.0}


def test_the_prompt_numbers_the_candidates():
    [message] = TASK.build_prompt(SAMPLE, PARAMS)
    assert "1. circle\n2. square\n3. triangle" in message["content"][-1]["text"]


def test_metric_by_hand():
    solutions = ["circle", "circle", "circle", "square", "triangle"]
    samples = [vgrpo.Sample(id=str(i), solution=s) for i, s in enumerate(solutions)]
    predictions = ["circle", "circle", "circle", None, "square"]
    # top-1: 3 of 5 right; macro: circle 3/3, square 0/1, triangle 0/1 -> (1 + 0 + 0) / 3
    assert TASK.metric(predictions, samples, PARAMS) == pytest.approx({"top1": 0.6, "macro_accuracy": 1 / 3})
    predictions = ["circle", "square", "square", "square", "triangle"]
    # top-1: 3 of 5; macro: circle 1/3, square 1/1, triangle 1/1 -> (1/3 + 1 + 1) / 3
    assert TASK.metric(predictions, samples, PARAMS) == pytest.approx({"top1": 0.6, "macro_accuracy": 7 / 9})
    assert TASK.metric([], [], PARAMS) == {"top1": 0.0, "macro_accuracy": 0.0}
    assert macro_accuracy(["Circle"], ["circle"]) == 1.0


GOOD = {"id": "r", "question": "Which shape?", "classes": CLASSES_3, "solution": "square"}


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"solution": "hexagon"}, "solution", "expected the solution to be one of the classes"),
        ({"classes": []}, "classes", "expected a non-empty list of class names"),
        ({"classes": "circle, square"}, "classes", "expected a non-empty list of class names"),
        ({"classes": ["circle", 2]}, "classes", "expected a non-empty list of class names"),
        ({"classes": ["circle", " "]}, "classes", "expected a non-empty list of class names"),
        ({"classes": ["square", "Square"]}, "classes", "expected distinct class names"),
        ({"classes": None}, "classes", "expected a non-empty list of class names"),
        ({"solution": 2}, "solution", "expected a class name"),
    ],
)
def test_check_record_refuses_bad_records(change, field, message):
    with pytest.raises(ValueError, match=message) as info:
        TASK.check_record({**GOOD, **change}, PARAMS)
    assert getattr(info.value, "field", None) == field


def test_check_record_accepts_a_good_record():
    TASK.check_record(GOOD, PARAMS)
    TASK.check_record({**GOOD, "solution": "Square"}, PARAMS)  # names compare ignoring case


def test_data_check_reports_the_bad_line(tmp_path):
    lines = [GOOD, {**GOOD, "id": "bad", "solution": "star"}, {**GOOD, "id": "r2"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    [problem] = check_jsonl(path, TASK)
    assert (problem.line, problem.field) == (2, "solution") and "expected" in problem.reason


def test_the_generator_writes_loadable_records_with_their_images(dataset, tmp_path):
    for split, n in (("train", 12), ("val", 6)):
        samples = vgrpo.load_jsonl(dataset[split], TASK)
        assert len(samples) == n
        for s in samples:
            with Image.open(s.images[0]) as img:
                assert (float(img.width), float(img.height)) == s.image_size
    solutions = [s.solution for s in vgrpo.load_jsonl(dataset["train"], TASK)]
    assert set(solutions) == set(CLASSES)  # every class appears
    again = write_dataset(tmp_path, n_train=12, n_val=6, seed=0)
    assert again["train"].read_text() == dataset["train"].read_text()  # the seed decides
