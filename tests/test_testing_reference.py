"""check_task's check of reference completions (the SFT target): the built-ins pass, a wrong one is reported
with the record, and a task without the method (written before it existed) is not asked for one."""

from __future__ import annotations

import pytest

import vgrpo
from vgrpo.testing import check_task


@pytest.mark.parametrize("name", ["rec", "ovd", "count", "math"])
def test_the_builtin_reference_completions_parse_and_score_the_maximum(name):
    task = vgrpo.get_registry().task(name)
    extra = {
        "rec": [
            {
                "id": "resized",
                "image": "a.png",
                "question": "q",
                "solution": [10, 20, 31, 41],
                "image_size": [224, 224],
            },
            {
                "id": "polygon",
                "question": "q",
                "solution": [[0, 0], [10, 0], [10, 10]],
                "image_size": [50, 50],
            },
        ],
        "ovd": [{"id": "nothing", "question": "q", "solution": []}],
        "count": [{"id": "zero", "question": "q", "solution": 0}],
        "math": [{"id": "frac", "question": "q", "solution": "\\frac{1}{2}"}],
    }[name]
    check_task(task, examples=extra, fuzz=10)
    sample = vgrpo.Sample(
        id="s", solution=[10.0, 20.0, 30.0, 40.0], image_size=(224.0, 224.0), input_size=(112.0, 112.0)
    )
    if name == "rec":  # abs: the pixels of the image the model saw
        assert '"bbox_2d": [5, 10, 15, 20]' in task.reference_completion(sample, task.params())
        polygon = vgrpo.Sample(id="p", solution=[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
        assert task.reference_completion(polygon, task.params()) is None  # no box matches a polygon exactly


def test_a_reference_that_does_not_score_the_maximum_is_reported_with_its_record():
    base = type(vgrpo.get_registry().task("count"))

    class OffByOne(base):  # type: ignore[misc, valid-type]
        def reference_completion(self, sample, params):
            return f"<think>.</think><answer>{sample.solution + 1}</answer>"

    with pytest.raises(AssertionError) as err:
        check_task(OffByOne(), examples=[{"id": "three", "question": "q", "solution": 3}], fuzz=5)
    message = str(err.value)
    assert (
        "reference_completion is not a correct answer" in message and "record 'count-0'" in message
    )  # the first case
    assert "misses the maximum of reward 'accuracy'" in message


def test_a_reference_that_does_not_parse_is_reported(fake_site):
    fake_site.task_plugin("acme-echo", "acme.echo")
    task = vgrpo.load_plugins().task("acme.echo")
    assert task.reference_completion(vgrpo.Sample(id="x"), task.params()) is None  # the default: none
    check_task(task, fuzz=5)  # a task without the method is not asked for one

    class Unparsable(type(task)):  # type: ignore[misc]
        def reference_completion(self, sample, params):
            return "no answer block"

    with pytest.raises(AssertionError, match=r"does not parse back to an answer.*record 'e'"):
        check_task(Unparsable(), fuzz=5)
