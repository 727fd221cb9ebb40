"""CPU threads: chosen from the free cores, or set; applied and logged by every run."""

from __future__ import annotations

import pytest

from rlhf.threads import apply_threads, choose_threads


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(2, 0.1, 2), (2, 0.6, 1), (2, 1.2, 1), (2, 7.0, 1), (8, 2.6, 5), (16, 0.0, 16)],
)
def test_automatic_threads_leave_the_busy_cores_alone(cores: int, load: float, expected: int) -> None:
    info = choose_threads(None, cores=cores, load=load)
    assert info["threads"] == expected and f"{expected} of {cores} cores free" in info["why"]


def test_a_set_number_is_used_as_it_is() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        info = apply_threads(1)
        assert info == {"threads": 1, "cores": info["cores"], "load": None, "why": "set to 1"} and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
