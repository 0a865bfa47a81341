"""unetrt.backends.torch in a process forked from one that ran torch: the model answers on one thread, never hangs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import cast

import numpy as np
import pytest
from forked import in_a_fork

from unetrt.segmenter import Segmenter

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    """torch's CPU kernels on two OpenMP threads in this process, as on any machine with two cores or more."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_segmenter_opened_in_a_fork_of_a_torch_process_answers_as_in_the_parent(two_torch_threads: None) -> None:
    """The documented rule for a fork (open a new Segmenter there) hung for good on torch: libgomp's threads of the
    parent's parallel regions are not in the child, which waited for them in its first convolution."""
    frame = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    with Segmenter("camvid", backend="torch", precision="fp32") as segmenter:
        expected = segmenter.segment(frame).mask

    def open_and_segment() -> tuple[np.ndarray, int | None]:
        with Segmenter("camvid", backend="torch", precision="fp32") as opened:
            return opened.segment(frame).mask, opened.backend.threads

    mask, threads = cast(tuple[np.ndarray, int], in_a_fork(open_and_segment, seconds=60))
    refused = in_a_fork(lambda: Segmenter("camvid", backend="torch", precision="fp32", threads=2), seconds=60)
    assert np.array_equal(mask, expected)
    assert threads == 1
    assert isinstance(refused, str)
    assert refused.startswith("ValueError: threads=2 cannot run in a process forked from one that had imported "
                              "torch"), refused
    assert "'spawn' or 'forkserver'" in refused
