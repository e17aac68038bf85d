import math

import numpy as np
import pytest

from edgepack.verify.metrics import compare, snr_db


def test_snr_is_infinite_for_identical_outputs():
    x = np.array([[1.0, 2.0], [3.0, -4.0]], np.float32)
    assert math.isinf(snr_db(x, x.copy()))


def test_snr_matches_the_definition():
    ref = np.array([[3.0, 4.0]])          # signal energy 25
    out = np.array([[3.0, 3.0]])          # noise energy 1
    assert snr_db(ref, out) == pytest.approx(10 * math.log10(25.0))


def test_compare_counts_accuracy_agreement_and_error():
    ref = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    out = np.array([[1.5, 0.0], [0.0, 2.0], [0.0, 1.0], [0.0, 2.5]])
    labels = np.array([0, 1, 1, 1])
    p = compare(ref, out, labels)
    assert p.reference_accuracy == pytest.approx(0.75)
    assert p.accuracy == pytest.approx(1.0)
    assert p.agreement == pytest.approx(0.75)
    assert p.max_abs_error == pytest.approx(2.0)
    assert p.accuracy_drop_pt == pytest.approx(-25.0)
    assert p.samples == 4


def test_compare_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        compare(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2, int))
