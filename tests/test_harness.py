"""The parity harness itself: a NaN or an infinity on one side can never pass as agreement."""

from __future__ import annotations

import math

import numpy as np

from tests.harness import absolute_error, max_abs


def test_one_sided_nan_or_inf_is_an_infinite_error():
    assert absolute_error([1.0, np.nan], [1.0, 2.0]) == math.inf
    assert absolute_error([1.0, 2.0], [1.0, np.nan]) == math.inf
    assert absolute_error([np.inf], [1.0]) == math.inf
    assert absolute_error([np.inf], [-np.inf]) == math.inf


def test_matching_non_finite_values_agree():
    assert absolute_error([np.nan, np.inf, 3.0], [np.nan, np.inf, 3.5]) == 0.5


def test_scale_ignores_non_finite_values():
    assert max_abs([np.nan, -np.inf, -2.0, 1.0]) == 2.0
    assert max_abs([np.nan]) == 0.0
