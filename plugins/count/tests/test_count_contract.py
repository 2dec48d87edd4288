"""The count task honours the vgrpo contract (vgrpo.testing.check_task), on fuzzed model output too."""

from __future__ import annotations

from vgrpo.testing import check_task
from vgrpo_count.task import CountTask


def test_count_honours_the_contract():
    zero = {"id": "zero", "question": "How many dogs?", "solution": 0}
    check_task(CountTask(), examples=[(zero, "<think>There is no dog.</think> <answer>zero</answer>")])
