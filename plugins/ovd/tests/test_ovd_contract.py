"""The ovd task honours the vgrpo contract (vgrpo.testing.check_task), on fuzzed model output too."""

from __future__ import annotations

from vgrpo.testing import check_task
from vgrpo_ovd.task import OvdTask


def test_ovd_honours_the_contract():
    nothing = {"id": "nothing", "question": "Find every cat.", "solution": [], "image_size": [224, 224]}
    check_task(OvdTask(), examples=[(nothing, "<think>No cat.</think> <answer>[]</answer>")])
