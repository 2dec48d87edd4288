"""The mixture sampler: weights respected, every record visited each epoch, exact resume."""

from __future__ import annotations

from collections import Counter

import pytest

from vgrpo.mixture import MixtureSampler


def test_weights_are_respected():
    sampler = MixtureSampler([100, 100, 100], [1.0, 2.0, 1.0], seed=3)
    counts = Counter(d.task_index for d in sampler.take(8000))
    assert abs(counts[1] / 8000 - 0.5) < 0.03 and abs(counts[0] / 8000 - 0.25) < 0.03


def test_each_epoch_is_a_permutation_and_epochs_differ():
    sampler = MixtureSampler([7], [1.0], seed=0)
    first, second = [d.record_index for d in sampler.take(7)], [d.record_index for d in sampler.take(7)]
    assert sorted(first) == sorted(second) == list(range(7)) and first != second


def test_resume_continues_exactly():
    a = MixtureSampler([5, 9, 3], [1, 1, 2], seed=11)
    a.take(17)
    state = a.state_dict()
    expected = a.take(20)
    b = MixtureSampler([5, 9, 3], [1, 1, 2], seed=11)
    b.load_state_dict(state)
    assert b.take(20) == expected


def test_different_seeds_differ_and_bad_state_is_refused():
    assert MixtureSampler([50], [1], seed=1).take(10) != MixtureSampler([50], [1], seed=2).take(10)
    state = MixtureSampler([5], [1], seed=1).state_dict()
    with pytest.raises(ValueError, match="data or seed changed"):
        MixtureSampler([6], [1], seed=1).load_state_dict(state)


@pytest.mark.parametrize("sizes, weights", [([0], [1]), ([3], [0]), ([3, 4], [1]), ([], [])])
def test_bad_arguments(sizes, weights):
    with pytest.raises(ValueError):
        MixtureSampler(sizes, weights)
