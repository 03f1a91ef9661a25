"""Calibration reads a named kernel's own profiled time, or fails loudly."""

from __future__ import annotations

import pytest

from aqua_model.validate.streams import _main


def test_a_named_kernel_gives_its_own_durations() -> None:
    durs = {"_split_kernel": [3e-6, 4e-6], "_combine_kernel": [1e-6]}
    assert _main(durs, "_combine_kernel") == [1e-6]
    assert _main(durs) == [3e-6, 4e-6]  # unnamed: the longest kernel of the call


def test_a_named_kernel_the_profiler_missed_is_an_error_not_another_kernels_time() -> None:
    with pytest.raises(RuntimeError, match="_prologue_kernel"):
        _main({"_split_kernel": [3e-6]}, "_prologue_kernel")
    with pytest.raises(RuntimeError, match="no kernel"):
        _main({})


def test_without_a_per_kernel_profile_the_whole_call_stands_for_the_kernel() -> None:
    assert _main({"<call>": [5e-6]}, "_split_kernel") == [5e-6]
