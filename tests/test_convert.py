"""`vgrpo data convert --from vlm-r1`: VLM-R1's JSONL (and REC annotation arrays) become our records.

The input lines are written by hand in VLM-R1's shapes (README "For your own data", grpo_jsonl.py, the
rec_jsons_processed items quoted in om-ai-lab/VLM-R1#11); the expected records are written by hand too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vgrpo.cli import main
from vgrpo.convert import convert_file
from vgrpo.data import check_jsonl
from vgrpo.errors import ParamsError
from vgrpo.plugins import get_registry

REC_PROMPT = "<image>Please provide the bounding box coordinate of the region this sentence describes: {}."


def turns(human: str, gpt: object) -> list[dict[str, object]]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "coco").mkdir()
    Image.new("RGB", (64, 48), "white").save(tmp_path / "coco" / "a.png")
    Image.new("RGB", (32, 32), "black").save(tmp_path / "coco" / "b.png")
    return tmp_path


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8"
    )
    return path


def read_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def problems_by_line(report) -> dict[int, list[tuple[str | None, str]]]:
    out: dict[int, list[tuple[str | None, str]]] = {}
    for p in report.problems:
        out.setdefault(p.line, []).append((p.field, p.reason))
    return out


REC_LINES: list[object] = [
    {
        "id": 1,
        "image": "a.png",
        "conversations": turns(REC_PROMPT.format("the red ball"), "<answer>[1, 2, 30, 40]</answer>"),
    },
    {"id": 2, "image": "gone.png", "conversations": turns(REC_PROMPT.format("the cat"), "[1, 2, 30, 40]")},
    {"id": 3, "image": "a.png", "conversations": turns("<image>the dog", "[30, 2, 10, 40]")},
    '{"id": 4, "image": "a.png", "conversations": [',
    {"id": 5, "image": "a.png", "question": "the cat", "answer": [1, 2, 3, 4]},
    {
        "id": "six",
        "image": "a.png",
        "conversations": turns("<image>the left box", '{"bbox_2d": [0.5, 1, 20, 30.5]}'),
    },
]


def test_rec_lines_good_and_bad_are_all_reported(workdir: Path):
    src = write_lines(workdir / "rec.jsonl", REC_LINES)
    out = workdir / "out" / "rec.jsonl"
    report = convert_file(src, out, image_root=workdir / "coco")
    assert (report.task, report.records, report.converted, report.failed, report.unit) == (
        "rec",
        6,
        2,
        4,
        "line",
    )
    assert read_records(out) == [
        {
            "id": 1,
            "image": "../coco/a.png",
            "question": "the red ball",
            "solution": [1.0, 2.0, 30.0, 40.0],
            "image_size": [64.0, 48.0],
        },
        {
            "id": "six",
            "image": "../coco/a.png",
            "question": "the left box",
            "solution": [0.5, 1.0, 20.0, 30.5],
            "image_size": [64.0, 48.0],
        },
    ]
    got = problems_by_line(report)
    assert sorted(got) == [2, 3, 4, 5]
    assert got[2] == [("image", f"image not found: {workdir / 'coco' / 'gone.png'}")]
    [(field, reason)] = got[3]
    assert (
        field == "conversations[1].value" and "x2 > x1 and y2 > y1" in reason and "[30, 2, 10, 40]" in reason
    )
    [(field, reason)] = got[4]
    assert field is None and reason.startswith("invalid JSON")
    [(field, reason)] = got[5]
    assert field is None and reason.startswith("unknown format") and "'answer'" in reason
    assert all(p.file == str(src) for p in report.problems)
    # what was written is a valid dataset for the task (the images resolve against the output's folder)
    assert check_jsonl(out, get_registry().task("rec")) == []


def test_a_repeated_id_is_reported_and_only_its_first_record_written(workdir: Path):
    line = {"id": 7, "image": "a.png", "conversations": turns("<image>the ball", "[1, 2, 30, 40]")}
    other = {**line, "id": "7"}  # the same id once loaded (ids are strings in a Sample)
    src = write_lines(workdir / "dup.jsonl", [line, {**line, "id": 8}, line, other])
    out = workdir / "dup-out.jsonl"
    report = convert_file(src, out, image_root=workdir / "coco", task="rec")
    assert [r["id"] for r in read_records(out)] == [7, 8]
    assert (report.converted, report.failed) == (2, 2)
    assert problems_by_line(report) == {
        3: [("id", "id 7 is already used by line 1; ids must be unique (vgrpo eval resumes by id)")],
        4: [("id", "id '7' is already used by line 1; ids must be unique (vgrpo eval resumes by id)")],
    }


def test_rec_annotation_array_uses_the_caption_and_the_size(workdir: Path):
    """rec_jsons_processed/*.json: a JSON array of {image, problem, normal_caption, solution, width, ...}."""
    items = [
        {
            "id": 0,
            "image": "a.png",
            "problem": REC_PROMPT.format("the lady with the blue shirt")[7:],
            "normal_caption": "the lady with the blue shirt",
            "solution": [10.5, 3.0, 60.25, 47.0],
            "normalized_solution": [164, 62, 941, 979],
            "width": 64,
            "height": 48,
            "dataset_name": "refcoco",
        },
        {
            "id": 1,
            "image": "b.png",
            "problem": "the man",
            "solution": [1, 1, 5, 5],
            "width": 64,
            "height": 48,
        },
    ]
    src = workdir / "refcoco_val.json"
    src.write_text(json.dumps(items, indent=2), encoding="utf-8")
    report = convert_file(src, workdir / "val.jsonl", image_root=workdir / "coco")
    assert (report.unit, report.task, report.converted) == ("item", "rec", 1)
    assert read_records(workdir / "val.jsonl") == [
        {
            "id": 0,
            "image": "coco/a.png",
            "question": "the lady with the blue shirt",
            "solution": [10.5, 3.0, 60.25, 47.0],
            "image_size": [64.0, 48.0],
        },
    ]
    [problem] = report.problems
    assert (problem.line, problem.field) == (2, "width")
    assert problem.reason == "expected the size of the image, 32 x 32, got width 64 and height 48"


def test_other_tasks_and_task_inference(workdir: Path):
    lines = [
        {
            "id": "o1",
            "image": "a.png",
            "accu_reward_method": "od_ap",
            "conversations": turns(
                "<image>Detect: dog, cat.", '```json\n[{"bbox_2d": [1, 2, 10, 20], "label": "dog"}]\n```'
            ),
        },
        {"id": "o2", "image": "b.png", "conversations": turns("<image>Detect: cat.", "None")},
        {"id": "o3", "image": "a.png", "conversations": turns("<image>How many dogs?", "2")},
    ]
    src = write_lines(workdir / "ovd.jsonl", lines)
    report = convert_file(src, workdir / "ovd_out.jsonl", image_root=workdir / "coco")
    assert report.task == "ovd" and report.converted == 2
    assert read_records(workdir / "ovd_out.jsonl") == [
        {
            "id": "o1",
            "image": "coco/a.png",
            "question": "Detect: dog, cat.",
            "solution": [{"bbox_2d": [1.0, 2.0, 10.0, 20.0], "label": "dog"}],
            "image_size": [64.0, 48.0],
        },
        {
            "id": "o2",
            "image": "coco/b.png",
            "question": "Detect: cat.",
            "solution": [],
            "image_size": [32.0, 32.0],
        },
    ]
    [problem] = report.problems
    assert problem.line == 3
    assert problem.reason.startswith(
        "looks like a count record (a whole-number answer) but the file converts as ovd"
    )

    count = write_lines(
        workdir / "count.jsonl",
        [
            {
                "id": 7,
                "image": "a.png",
                "conversations": turns("<image>What number of purple metallic balls are there?", "0"),
            },
            {"id": 8, "image": "a.png", "conversations": turns("<image>How many cubes?", 3)},
            {"id": 9, "image": "a.png", "conversations": turns("<image>How many cubes?", "2.5")},
        ],
    )
    report = convert_file(count, workdir / "count_out.jsonl", task="count", image_root=workdir / "coco")
    assert [r["solution"] for r in read_records(workdir / "count_out.jsonl")] == [0, 3]
    [problem] = report.problems
    assert (problem.line, problem.field, problem.reason) == (
        3,
        "conversations[1].value",
        "expected a whole number >= 0, got '2.5'",
    )


def test_math_text_only_and_multi_image(workdir: Path):
    lines = [
        {
            "id": "m1",
            "conversations": turns(
                "What is 1/2 + 1/4? First output the thinking process in <think> </think> tags and then "
                "output the final answer in <answer> </answer> tags.",
                "<think>3/4</think><answer>\\frac{3}{4}</answer>",
            ),
        },
        {
            "id": "m2",
            "image": ["a.png", "b.png"],
            "accu_reward_method": "math",
            "conversations": turns("<image><image>Sum of the two counts?", "<answer> 7 </answer>"),
        },
        {"id": "m3", "image": ["a.png", "b.png"], "conversations": turns("<image>One placeholder only", "1")},
        {"id": "m4", "conversations": [*turns("a", "b"), *turns("c", "d")]},
    ]
    src = write_lines(workdir / "math.jsonl", lines)
    report = convert_file(src, workdir / "math_out.jsonl", task="math", image_root=workdir / "coco")
    assert read_records(workdir / "math_out.jsonl") == [
        {"id": "m1", "question": "What is 1/2 + 1/4?", "solution": "\\frac{3}{4}"},
        {
            "id": "m2",
            "image": ["coco/a.png", "coco/b.png"],
            "question": "Sum of the two counts?",
            "solution": "7",
            "image_size": [64.0, 48.0],
        },
    ]
    got = problems_by_line(report)
    assert got[3] == [("conversations[0].value", "expected 2 <image> placeholder(s), one per image, got 1")]
    multi_turn = (
        "expected a human turn then a gpt turn, got 4 turn(s) (multi-turn conversations are not supported)"
    )
    assert got[4] == [("conversations", multi_turn)]


def test_lines_json_cannot_hold_are_reported_too(workdir: Path):
    src = write_lines(workdir / "odd.jsonl", ["[" * 100_000 + "]" * 100_000, "1" * 5000, REC_LINES[0]])
    report = convert_file(src, workdir / "odd_out.jsonl", image_root=workdir / "coco")
    assert (report.converted, [p.line for p in report.problems]) == (1, [1, 2])
    assert report.problems[0].reason == "invalid JSON (nested too deeply)"
    assert report.problems[1].reason.startswith("invalid JSON (Exceeds the limit (4300 digits)")


def test_bad_arguments_raise(workdir: Path):
    src = write_lines(workdir / "x.jsonl", REC_LINES[:1])
    with pytest.raises(ParamsError, match="unknown format 'llava'"):
        convert_file(src, workdir / "y.jsonl", source_format="llava")
    with pytest.raises(
        ParamsError, match=r"convert to tasks \['count', 'math', 'ovd', 'rec'\], not 'acme.qa'"
    ):
        convert_file(src, workdir / "y.jsonl", task="acme.qa")
    with pytest.raises(ParamsError, match="is the input file"):
        convert_file(src, src)


def test_cli_writes_the_good_lines_and_tables_the_rest(workdir: Path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one table row per problem
    src = write_lines(workdir / "rec.jsonl", REC_LINES)
    out = workdir / "rec_vgrpo.jsonl"
    argv = [
        "data",
        "convert",
        "--from",
        "vlm-r1",
        str(src),
        "--image-root",
        str(workdir / "coco"),
        "-o",
        str(out),
    ]
    assert main(argv) == 1  # some lines were not converted
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "4 line(s) of" in captured.err and "not converted" in captured.err
    assert "converted 2 of 6 lines" in captured.err and "(task rec)" in captured.err
    assert "image not found" in captured.err and "unknown format" in captured.err
    assert [r["id"] for r in read_records(out)] == [1, "six"]

    assert main([*argv, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["task"], doc["records"], doc["converted"]) == ("rec", 6, 2)
    assert [p["line"] for p in doc["problems"]] == [2, 3, 4, 5]

    good = write_lines(workdir / "good.jsonl", REC_LINES[:1])
    assert (
        main(
            [
                "data",
                "convert",
                "--from",
                "vlm-r1",
                str(good),
                "--image-root",
                str(workdir / "coco"),
                "-o",
                str(workdir / "good_out.jsonl"),
                "--task",
                "rec",
            ]
        )
        == 0
    )
    assert main(["data", "convert", str(good), "-o", str(workdir / "z.jsonl")]) == 2  # --from is required
    assert "expected --from FORMAT" in capsys.readouterr().err


# -- the tasks decide: a third party imports VLM-R1 records exactly as the built-ins do ----------------------
from vgrpo.convert import VlmR1Record  # noqa: E402
from vgrpo.plugins import load_plugins  # noqa: E402

COLOUR_TASK = '''
import vgrpo

@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed, sample):
    """1.0 when the answer is the colour."""
    return 1.0 if parsed == sample.solution else 0.0

class Colour(vgrpo.Task):
    name = "acme.colour"
    description = "Name a colour."
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {"id": "c", "question": "Which colour?", "solution": "red"}
    example_completion = "<think>.</think><answer>red</answer>"

    def parse(self, completion, params):
        return vgrpo.extract_answer(completion)

    def check_solution(self, solution):
        if solution not in ("red", "green", "blue"):
            raise ValueError(f"expected red, green or blue, got {solution!r}")
        return solution

    def metric(self, predictions, samples, params):
        return {"accuracy": sum(p == s.solution for p, s in zip(predictions, samples)) / max(len(samples), 1)}

    def vlm_r1_match(self, record):
        if record.method == "colour":
            return 1.0, "accu_reward_method 'colour'"
        return (0.6, "a box, as the colour task sees it") if record.value == [9, 9, 9, 9] else None

    def vlm_r1_question(self, record):
        print("plugin chatter")  # never reaches vgrpo's stdout (--json stays valid)
        return record.question.upper()

    def vlm_r1_solution(self, record):
        if not isinstance(record.answer, str):
            raise ValueError(f"expected a colour name, got {record.quoted_answer}")
        return record.answer.strip().lower()

@vgrpo.hookimpl
def vgrpo_tasks():
    return [Colour()]
'''


def test_a_third_party_task_converts_vlm_r1_records_like_a_built_in(fake_site, workdir: Path, capsys):
    fake_site.add("acme-colour", source=COLOUR_TASK)
    fake_site.task_plugin("acme-echo", "acme.echo")  # no vlm_r1_* methods: never a target
    registry = load_plugins()
    colour = {"accu_reward_method": "colour"}
    lines = [
        {"id": 1, "image": "a.png", **colour, "conversations": turns("<image>Hue?", "<answer>Red </answer>")},
        {"id": 2, "image": "a.png", **colour, "conversations": turns("<image>Sky?", 7)},
        {"id": 3, "image": "b.png", **colour, "conversations": turns("<image>Ink?", "Mauve")},
        {"id": 4, "image": "b.png", "conversations": turns("<image>How many?", "2")},
        {"id": 5, "image": "b.png", "conversations": turns("<image>Where?", "[9, 9, 9, 9]")},
    ]
    src = write_lines(workdir / "colour.jsonl", lines)
    report = convert_file(src, workdir / "out.jsonl", image_root=workdir / "coco", registry=registry)
    assert "plugin chatter" not in capsys.readouterr().out
    assert (report.task, report.converted) == ("acme.colour", 1)
    record = {"id": 1, "image": "coco/a.png", "question": "HUE?", "solution": "red"}
    assert read_records(workdir / "out.jsonl") == [{**record, "image_size": [64.0, 48.0]}]
    got = problems_by_line(report)
    assert got[2] == [("conversations[1].value", "expected a colour name, got '7'")]
    unknown = "expected red, green or blue, got 'mauve' (task 'acme.colour')"
    assert got[3] == [("conversations[1].value", unknown)]
    [(_, reason)] = got[4]
    assert reason.startswith("looks like a count record (a whole-number answer) but the file converts as")
    [(_, reason)] = got[5]  # two tasks equally sure: neither is picked
    assert reason == (
        "cannot tell the task: it looks like acme.colour (a box, as the colour task sees it) and like rec "
        "(a box answer); pass --task (one of ['acme.colour', 'count', 'math', 'ovd', 'rec'])"
    )
    targets = r"convert to tasks \['acme.colour', 'count', .*\], not 'acme.echo'"
    with pytest.raises(ParamsError, match=targets):
        convert_file(src, workdir / "y.jsonl", task="acme.echo", registry=registry)

    argv = ["data", "convert", "--from", "vlm-r1", str(src), "--image-root", str(workdir / "coco")]
    assert main([*argv, "-o", str(workdir / "cli.jsonl"), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)  # plugin output went to stderr: stdout is one JSON document
    assert (doc["task"], doc["converted"]) == ("acme.colour", 1)


def test_a_task_without_the_vlm_r1_methods_converts_nothing(fake_site):
    fake_site.task_plugin("acme-echo", "acme.echo")
    task = load_plugins().task("acme.echo")
    record = VlmR1Record(1, "x", (), "Say hi", "problem", "hi", "solution")
    assert task.vlm_r1_match(record) is None and task.vlm_r1_question(record) == "Say hi"
    with pytest.raises(NotImplementedError, match="does not convert VLM-R1 records"):
        task.vlm_r1_solution(record)
    assert record.value == "hi" and record.quoted_answer == "'hi'"
    assert VlmR1Record(1, "x", (), "q", "f", '```json\n{"a": [1]}\n```', "g").value == {"a": [1]}
