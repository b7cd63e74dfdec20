from __future__ import annotations

import numpy as np
import pytest

from lrdif.metrics import confusion_matrix, summarize

# Rows = true class. Class "c" never occurs in the truth but is predicted once.
CM = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])
NAMES = ("a", "b", "c")


def test_summary_matches_hand_computed_values() -> None:
    s = summarize(CM, NAMES)
    assert s["num_samples"] == 12
    assert s["accuracy"] == pytest.approx(8 / 12)
    pa, pb = s["per_class"]["a"], s["per_class"]["b"]
    assert pa["precision"] == pytest.approx(5 / 7) and pa["recall"] == pytest.approx(5 / 6)
    assert pb["precision"] == pytest.approx(3 / 4) and pb["recall"] == pytest.approx(3 / 6)
    assert pa["f1"] == pytest.approx(10 / 13) and pb["f1"] == pytest.approx(3 / 5)
    # A class without samples is left out of the class averages; its precision is 0.
    assert s["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert s["mean_class_accuracy"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert s["macro_f1"] == pytest.approx((10 / 13 + 3 / 5) / 2)
    assert s["confusion_matrix"] == CM.tolist()


def test_confusion_matrix_counts_pairs() -> None:
    t = [0] * 6 + [1] * 6
    p = [0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 2]
    np.testing.assert_array_equal(confusion_matrix(t, p, 3), CM)


def test_agrees_with_scikit_learn_on_random_labels() -> None:
    sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is in the analysis extra")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    s = summarize(confusion_matrix(t, p, 5), tuple("abcde"))
    assert s["accuracy"] == pytest.approx(sk.accuracy_score(t, p))
    assert s["macro_f1"] == pytest.approx(sk.f1_score(t, p, average="macro"))
    assert s["mean_class_accuracy"] == pytest.approx(sk.balanced_accuracy_score(t, p))


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="entries"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="class names"):
        summarize(CM, ("a", "b"))
