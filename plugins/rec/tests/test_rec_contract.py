"""The rec task honours the vgrpo contract (vgrpo.testing.check_task), on fuzzed model output too."""

from __future__ import annotations

from vgrpo.testing import check_task
from vgrpo_rec.task import RecTask


def test_rec_honours_the_contract():
    resized = {
        "id": "resized",
        "question": "the box",
        "solution": [100, 100, 300, 300],
        "image_size": [640, 480],
        "input_size": [320, 240],
    }
    polygon = {"id": "polygon", "question": "the triangle", "solution": [[0, 0], [100, 0], [0, 100]]}
    check_task(
        RecTask(),
        examples=[(resized, '<think>.</think><answer>{"bbox_2d": [50, 50, 150, 150]}</answer>'), polygon],
        params=[{"iou_threshold": 0.5}],
    )
