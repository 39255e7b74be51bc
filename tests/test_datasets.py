"""The interface both built-in datasets share (data/datasets.py)."""

import numpy as np
import pytest

from seemore.config import apply_overrides, get_preset
from seemore.data.datasets import DATASETS, data_workers, dataset_of, open_dataset, task_names
from seemore.errors import UserError


@pytest.mark.parametrize("name", DATASETS)
def test_pair_is_labelled_without_the_questions(name):
    data = open_dataset(name, 32)
    for split in ("val", "test"):
        for i in range(5):
            (image, caption), example = data.pair(split, i), data.labelled(split, i)
            assert caption == example.caption and example.questions
            np.testing.assert_array_equal(image, example.image)
            assert {kind for kind, _, _ in example.questions} <= set(data.question_types)


def test_tasks_are_checked_against_the_dataset():
    config = apply_overrides(get_preset("tiny"), ["data.dataset=digits"])
    assert task_names(config) == ("caption", "digit", "verify")
    assert task_names(get_preset("tiny"))[:3] == ("caption", "color", "shape")
    with pytest.raises(UserError, match="color is not a task of data.dataset=digits"):
        task_names(apply_overrides(get_preset("tiny"), ["data.dataset=digits",
                                                        "data.tasks=color"]))
    config = apply_overrides(get_preset("tiny"), ["data.dataset=mnist"])  # a path, perhaps
    with pytest.raises(UserError, match="mnist: no such dataset; give shapes, digits or"):
        dataset_of(config)


def test_data_workers_are_none_on_a_cpu_and_several_on_a_gpu(monkeypatch):
    """data.num_workers=-1 (the default): the batches are made in the training process on
    a CPU, whose cores the step uses, and in workers on a GPU, one core per process left."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert data_workers(-1, "cpu") == 0
    assert data_workers(-1, "cuda") == 8
    assert data_workers(3, "cuda") == data_workers(3, "cpu") == 3  # as the user set it
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 processes on the machine
    assert data_workers(-1, "cuda") == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert data_workers(-1, "cuda") == 0
    with pytest.raises(UserError, match="data.num_workers must be >= 0, or -1 for automatic"):
        apply_overrides(get_preset("tiny"), ["data.num_workers=-2"])
