"""acme.docqa: the contract, ANLS by hand, the metric, the shipped sample, and totality on any text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import vgrpo
from acme_docqa import DocQATask, anls, exact_match
from acme_docqa.samples import write_samples
from vgrpo.testing import check_task

SAMPLE = Path(__file__).resolve().parents[1] / "sample"
TASK = DocQATask()
PARAMS = TASK.params()


def test_plugin_is_installed_and_registered():
    registry = vgrpo.load_plugins()
    assert registry.task("acme.docqa").name == "acme.docqa"
    assert registry.owner("task", "acme.docqa")[0] == "vgrpo-acme-docqa"


def test_the_task_honours_the_plugin_contract():
    records = [json.loads(line) for line in (SAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    examples = [
        (r, f"<think>I read it off the image.</think><answer>{r['solution'][0]}</answer>") for r in records
    ]
    check_task(TASK, examples=examples, params=[{"anls_threshold": 1.0}, {"require_answer_tags": False}])


@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("$166.70", ["$166.70", "166.70"], 1.0),
        ("$166.7", ["$166.70", "166.70"], 6 / 7),  # 1 edit in 7 beats 2 edits in 6
        ("INV 2381", ["INV-2381"], 7 / 8),
        ("Umbrella", ["Umbrella Parts"], 1 - 6 / 14),
        ("UMBRELLA   parts", ["Umbrella Parts"], 1.0),  # case and repeated whitespace are ignored
        ("  invoice\tno ", ["Invoice No"], 1.0),
        ("23", ["2381"], 0.0),  # NL = 2/4 = 0.5 is not below the threshold
        ("238", ["2381"], 0.75),
        ("37", ["73"], 0.0),
        ("", ["73"], 0.0),
        (None, ["73"], 0.0),
    ],
)
def test_anls_by_hand(prediction, answers, expected):
    assert anls(prediction, answers) == pytest.approx(expected)


def test_the_threshold_is_a_param():
    sample = vgrpo.Sample(id="a", solution=["2381"])
    [strict] = vgrpo.score(TASK, ["<answer>23</answer>"], [sample])
    [loose] = vgrpo.score(TASK, ["<answer>23</answer>"], [sample], {"anls_threshold": 0.6})
    assert strict.rewards["anls"] == 0.0 and loose.rewards["anls"] == pytest.approx(0.5)
    with pytest.raises(vgrpo.ParamsError, match="anls_threshold"):
        TASK.params({"anls_threshold": 0})


def test_exact_match_ignores_case_and_whitespace_only():
    assert exact_match("acme  SUPPLY co.", ["Acme Supply Co."]) == 1.0
    assert exact_match("Acme Supply Co", ["Acme Supply Co."]) == 0.0
    assert exact_match(None, ["x"]) == 0.0


def test_parse_reads_the_answer_block():
    assert TASK.parse("<think>t</think><answer>  INV-0421 \n</answer>", PARAMS) == "INV-0421"
    assert TASK.parse("<think>t</think><answer> </answer>", PARAMS) is None
    assert TASK.parse("INV-0421", PARAMS) is None
    assert TASK.parse("INV-0421", TASK.params({"require_answer_tags": False})) == "INV-0421"


@pytest.mark.parametrize("solution, expected", [("73", ["73"]), (["$5", "5"], ["$5", "5"])])
def test_check_solution_takes_a_string_or_a_list(solution, expected):
    assert TASK.check_solution(solution) == expected


@pytest.mark.parametrize("bad", [None, 73, [], [""], ["a", 1], "  ", {"answer": "a"}])
def test_check_solution_refuses_other_shapes(bad):
    with pytest.raises(ValueError, match="acceptable answer strings"):
        TASK.check_solution(bad)


def test_metric_is_the_mean_over_the_split():
    samples = [
        vgrpo.Sample(id=str(i), solution=s) for i, s in enumerate([["73"], ["INV-2381"], ["Jan"], ["B"]])
    ]
    metric = TASK.metric(["73", "INV 2381", None, "C"], samples, PARAMS)
    assert metric["anls"] == pytest.approx((1 + 0.875 + 0 + 0) / 4)
    assert metric["exact_match"] == pytest.approx(0.25)
    assert TASK.metric([], [], PARAMS) == {"anls": 0.0, "exact_match": 0.0}


def test_shipped_completions_score_as_the_readme_says():
    lines = (SAMPLE / "completions.jsonl").read_text(encoding="utf-8").splitlines()
    cases = [json.loads(line) for line in lines]
    samples = [
        vgrpo.Sample(id=str(i), solution=TASK.check_solution(c["solution"])) for i, c in enumerate(cases)
    ]
    results = vgrpo.score(TASK, [c["completion"] for c in cases], samples)
    expected_anls = [1.0, 6 / 7, 0.875, 4 / 7, 1.0, 0.0, 0.0, 0.0]
    expected_format = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert [r.rewards["anls"] for r in results] == pytest.approx(expected_anls)
    assert [r.rewards["exact_match"] for r in results] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert [r.reward for r in results] == pytest.approx(
        [a + f for a, f in zip(expected_anls, expected_format, strict=True)]
    )


def test_shipped_sample_loads_and_its_images_match_their_records():
    for split, n in (("train", 16), ("val", 8)):
        samples = vgrpo.load_jsonl(SAMPLE / f"{split}.jsonl", TASK)
        assert len(samples) == n
        for s in samples:
            with Image.open(s.images[0]) as img:
                assert (float(img.width), float(img.height)) == s.image_size


def test_the_generator_reproduces_the_shipped_records(tmp_path):
    write_samples(tmp_path, n_train=16, n_val=8, seed=0)
    for split in ("train", "val"):
        assert (tmp_path / f"{split}.jsonl").read_text() == (SAMPLE / f"{split}.jsonl").read_text()
    assert len(list((tmp_path / "images").glob("*.png"))) == 24


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.lists(st.sampled_from(["<answer>", "</answer>", "<think>", "</think>", "INV", "-", " "])).map(
        "".join
    )
)
def test_any_text_gets_finite_in_range_rewards(text):
    [r] = vgrpo.score(TASK, [text], [vgrpo.Sample(id="a", solution=["INV-2381", "2381"])])
    assert r.errors == []
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in r.rewards.values())
