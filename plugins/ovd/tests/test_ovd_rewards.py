"""The ovd task's rewards through vgrpo.score: f1, length, accuracy, the empty rules, None, registration."""

from __future__ import annotations

import json

import pytest

import vgrpo


def box(label: str, x1: float, y1: float, x2: float, y2: float) -> dict:
    return {"bbox_2d": [x1, y1, x2, y2], "label": label}


def score_one(task, solution, answer, **kw) -> vgrpo.Score:
    if not isinstance(answer, str):
        answer = f"<think>t</think><answer>{json.dumps(answer)}</answer>"
    completion = answer
    sample = vgrpo.Sample(id="s", solution=task.check_solution(solution))
    (result,) = vgrpo.score(task, [completion], [sample], **kw)
    assert result.errors == []
    return result


def test_plugin_registers_the_task(task):
    assert task.name == "ovd"
    assert set(task.reward_map()) == {"accuracy", "ap", "ap50", "f1", "length", "format"}
    assert dict(task.default_weights) == {"accuracy": 1.0, "format": 1.0}
    assert tuple(task.metric_names) == ("map", "ap50")
    assert all(r.range == (0.0, 1.0) for r in task.rewards)
    assert list(task.Params.model_fields) == ["require_answer_tags"]


def test_template_renders_the_example(task):
    sample = vgrpo.data.sample_from_record(task.example, task)
    (message,) = task.build_prompt(sample, task.params())
    text = message["content"][-1]["text"]
    assert message["content"][0] == {"type": "image", "image": "scene.png"}
    assert text.startswith(task.example["question"])
    assert '{"bbox_2d": [x1, y1, x2, y2], "label": "category"}' in text
    assert "<think> </think>" in text and "<answer> </answer>" in text


def test_example_completion_is_correct(task):
    result = score_one(task, task.example["solution"], task.example_completion)
    assert result.rewards["format"] == 1.0
    assert result.rewards["accuracy"] == pytest.approx(1.0, abs=1e-15)
    assert result.rewards["f1"] == 1.0
    assert result.reward == pytest.approx(2.0, abs=1e-15)


def test_f1_hand_computed(task):
    gt = [box("a", 0, 0, 10, 10), box("b", 20, 0, 30, 10)]
    pred = [
        box("a", 0, 0, 10, 10),  # TP
        box("b", 21, 0, 31, 10),  # TP: IoU 90/110 = .82
        box("a", 40, 40, 50, 50),  # FP: no overlap
        box("dog", 0, 0, 10, 10),  # FP: no gt of that label
    ]
    # TP 2, FP 2, FN 0: F1 = 4 / (4 + 2)
    assert score_one(task, gt, pred).rewards["f1"] == pytest.approx(2 / 3)
    # IoU exactly .5 counts: [0,0,10,10] vs [0,0,10,5] → 50/100
    assert score_one(task, [box("a", 0, 0, 10, 10)], [box("a", 0, 0, 10, 5)]).rewards["f1"] == 1.0
    # IoU 49/100 does not: F1 = 0 (TP 0, FP 1, FN 1)
    assert score_one(task, [box("a", 0, 0, 10, 10)], [box("a", 0, 0, 10, 4.9)]).rewards["f1"] == 0.0
    # one box cannot match two objects: TP 1, FN 1 → 2/3
    result = score_one(task, [box("a", 0, 0, 10, 10)] * 2, [box("a", 0, 0, 10, 10)])
    assert result.rewards["f1"] == pytest.approx(2 / 3)


def test_f1_takes_the_maximum_matching_not_the_greedy_one(task):
    # p1 [2,0,12,10] overlaps g1 and g2 by 80/120 = .67 each; p2 = g1 (IoU with g2 60/140 = .43).
    # Greedy in written order could give p1 → g1 and leave p2 unmatched (F1 .5); the maximum matching
    # is p1 → g2, p2 → g1: TP 2, F1 1.
    gt = [box("a", 0, 0, 10, 10), box("a", 4, 0, 14, 10)]
    pred = [box("a", 2, 0, 12, 10), box("a", 0, 0, 10, 10)]
    assert score_one(task, gt, pred).rewards["f1"] == 1.0


def test_labels_compare_case_and_whitespace_insensitively(task):
    result = score_one(task, [box("Red Circle ", 0, 0, 10, 10)], [box("  red CIRCLE", 0, 0, 10, 10)])
    assert result.rewards["f1"] == 1.0
    assert result.rewards["ap"] == pytest.approx(1.0)


def test_length_and_accuracy(task):
    gt = [box("a", 0, 0, 10, 10), box("a", 20, 0, 30, 10)]
    four = [box("a", 0, 0, 10, 10), box("a", 20, 0, 30, 10), box("dog", 0, 0, 5, 5), box("dog", 5, 5, 9, 9)]
    result = score_one(task, gt, four)
    # hallucinated "dog" boxes do not lower COCO AP (no dog gt) ...
    assert result.rewards["ap"] == pytest.approx(1.0)
    # ... but the anti-flooding factor does: min(1, 2/4), so accuracy = 1 × .5
    assert result.rewards["length"] == 0.5
    assert result.rewards["accuracy"] == pytest.approx(0.5)
    # F1 counts them: TP 2, FP 2 → 4/6
    assert result.rewards["f1"] == pytest.approx(2 / 3)
    # fewer predictions than objects: length 1; one of two found → AP 51/101 (precision 1 up to recall .5)
    result = score_one(task, gt, four[:1])
    assert result.rewards["length"] == 1.0
    assert result.rewards["accuracy"] == pytest.approx(51 / 101)
    # malformed items are not counted by length: 2 valid boxes of 3 items
    result = score_one(task, gt, [*four[:2], box("a", 5, 5, 1, 1)])
    assert result.rewards["length"] == 1.0


def test_ranking_is_written_order(task):
    gt = [box("a", 0, 0, 100, 100)]
    miss = box("a", 500, 500, 600, 600)
    assert score_one(task, gt, [box("a", 0, 0, 100, 100), miss]).rewards["ap"] == pytest.approx(1.0)
    # a miss written first: precision .5 at recall 1 → AP .5
    assert score_one(task, gt, [miss, box("a", 0, 0, 100, 100)]).rewards["ap"] == pytest.approx(0.5)


def test_empty_rules(task):
    names = ("accuracy", "ap", "ap50", "f1", "length")
    both = score_one(task, [], [])
    assert [both.rewards[n] for n in names] == [1.0] * 5
    assert score_one(task, [], "<think>t</think><answer>null</answer>").rewards["accuracy"] == 1.0
    no_pred = score_one(task, [box("a", 0, 0, 1, 1)], [])
    assert [no_pred.rewards[n] for n in names] == [0.0, 0.0, 0.0, 0.0, 1.0]
    no_gt = score_one(task, [], [box("a", 0, 0, 1, 1)])
    assert [no_gt.rewards[n] for n in names] == [0.0, 0.0, 0.0, 0.0, 0.0]  # length min(1, 0/1)


def test_unparsable_scores_zero_everywhere(task):
    for solution in ([], [box("a", 0, 0, 1, 1)]):
        for completion in ("<think>t</think> no answer", "<think>t</think><answer>a cat</answer>", ""):
            result = score_one(task, solution, completion)
            assert result.parsed is None
            assert all(v == 0.0 for k, v in result.rewards.items() if k != "format")
            assert result.reward == result.rewards["format"]


def test_format_reward(task):
    good = score_one(task, [], "<think>t</think>\n<answer>[]</answer>\n")
    assert good.rewards["format"] == 1.0 and good.reward == 2.0
    bad = score_one(task, [], "prefix <think>t</think><answer>[]</answer>")
    assert bad.rewards["format"] == 0.0 and bad.rewards["accuracy"] == 1.0


def test_scores_are_memoised_across_rewards(task):
    from vgrpo_ovd.evaluation import evaluate

    evaluate.cache_clear()
    score_one(task, [box("a", 0, 0, 10, 10)], [box("a", 1, 1, 10, 10), box("a", 0, 0, 9, 9)])
    info = evaluate.cache_info()
    assert info.misses == 1 and info.hits == 4  # accuracy, ap, ap50, f1, length: one computation


def test_memo_is_bounded_by_boxes():
    from vgrpo_ovd.evaluation import _BoxBudgetMemo, _evaluate

    memo = _BoxBudgetMemo(_evaluate, max_boxes=800)
    gt = (("a", 0.0, 0.0, 10.0, 10.0),)
    first = (("a", 0.0, 0.0, 10.0, 9.0),)
    memo(gt, first)
    for i in range(500):  # 3 boxes an entry (gt, pred, +1): at most 266 fit
        memo(gt, (("a", 0.0, 0.0, 10.0, 20.0 + i),))
    assert memo.cache_info().boxes <= 800
    memo(
        gt, tuple(("a", 0.0, 0.0, 10.0, 10.0 + i) for i in range(5000))
    )  # too big to keep: computed, not stored
    assert memo.cache_info().boxes > 700  # and it flushed nothing
    hits = memo.cache_info().hits
    memo(gt, (("a", 0.0, 0.0, 10.0, 20.0 + 499),))
    memo(gt, first)  # the oldest entry was evicted
    assert memo.cache_info().hits == hits + 1
    assert memo(gt, first) == _evaluate(gt, first)
