"""Drawing a batch of prompts: unusable samples are skipped, counted and redrawn, and when too many in a row are,
the message says why each was skipped."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from PIL import Image

from vgrpo.errors import DataError
from vgrpo.mixture import Draw
from vgrpo.prompts import IMAGES_DO_NOT_OPEN, MAX_REDRAWS, draw_prompts
from vgrpo.task import Sample

ONE_PROCESS = SimpleNamespace(rank=0, world=1, gather_objects=lambda obj: [obj])


class _InTurn:
    """A sampler that draws the records of one entry in turn, for ever."""

    def __init__(self, n: int) -> None:
        self.n, self.i = n, -1

    def draw(self) -> Draw:
        self.i += 1
        return Draw(task_index=0, record_index=self.i % self.n)


def _entries(tmp_path, kinds):
    """One entry whose records are ``kinds``: ``ok`` (an image that opens), ``broken`` (one that does not) or
    ``long`` (opens, but the check refuses it)."""
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    image = {kind: str(tmp_path / ("broken.png" if kind == "broken" else "ok.png")) for kind in kinds}
    samples = [Sample(id=f"{i}-{kind}", question=kind, images=(image[kind],)) for i, kind in enumerate(kinds)]
    return [SimpleNamespace(task=SimpleNamespace(name="count"), params=None, samples=samples)]


def _refuse_long(prompt):
    if prompt.sample.question == "long":
        raise DataError(f"record {prompt.sample.id!r}: the prompt has 999 tokens", field="question")


def test_unusable_samples_are_skipped_counted_and_their_slots_refilled(tmp_path):
    counters: Counter[str] = Counter()
    entries = _entries(tmp_path, ["ok", "broken", "long", "ok"])
    prompts = draw_prompts(_InTurn(4), entries, 3, ONE_PROCESS, counters, check=_refuse_long)
    assert [p.sample.id for p in prompts] == ["0-ok", "3-ok", "0-ok"]  # slots 2 and 3 refilled by later draws
    assert counters["skipped_samples"] == 2 and prompts[0].images[0].size == (8, 8)


def test_when_too_many_samples_in_a_row_fail_the_message_counts_each_reason(tmp_path):
    entries = _entries(tmp_path, ["broken", "long"])
    reason = "too long for the engine"
    with pytest.raises(DataError) as err:
        draw_prompts(_InTurn(2), entries, 1, ONE_PROCESS, Counter(), check=_refuse_long, check_reason=reason)
    failed = MAX_REDRAWS + 1  # in turn: broken, long, broken, ...
    message = str(err.value)
    assert f"{failed} samples in a row could not be used" in message
    assert f"({failed // 2 + 1} {IMAGES_DO_NOT_OPEN}, {failed // 2} {reason})" in message
    assert "vgrpo data check" in message  # what to do about the images


def test_prompts_skipped_only_for_their_length_are_not_called_images_that_do_not_open(tmp_path):
    entries = _entries(tmp_path, ["long"])
    reason = "too long for the engine"
    with pytest.raises(DataError) as err:
        draw_prompts(_InTurn(1), entries, 1, ONE_PROCESS, Counter(), check=_refuse_long, check_reason=reason)
    message = str(err.value)
    assert f"({MAX_REDRAWS + 1} {reason}), e.g. " in message and "the prompt has 999 tokens" in message
    assert "images" not in message and "data check" not in message
