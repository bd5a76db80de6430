"""UF1 / UAR (Off-TANet Eqs. 11-12), absent-class rule, pooled vs per-subject, validation."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from mer_keras.evaluation.metrics import (
    PREDICTION_COLUMNS,
    accuracy,
    class_scores,
    confusion,
    per_dataset_scores,
    per_subject_scores,
    pooled_scores,
    uar,
    uf1,
    validate_predictions,
)


def _frame(rows):
    return pd.DataFrame(rows, columns=["clip", "subject", "dataset", "y_true", "y_pred"])


# --------------------------------------------------------------------------- hand-computed
def test_hand_computed_example():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    # class 0: n=3, predicted 2 times, TP=2 -> F1 = 2*2/(2*2+0+1) = 4/5,  recall 2/3
    # class 1: n=2, predicted 2 times, TP=1 -> F1 = 2*1/(2+1+1)   = 1/2,  recall 1/2
    # class 2: n=1, predicted 2 times, TP=1 -> F1 = 2*1/(2+1+0)   = 2/3,  recall 1/1
    # UF1 = (4/5 + 1/2 + 2/3) / 3 = (24 + 15 + 20) / 90 = 59/90
    # UAR = (2/3 + 1/2 + 1) / 3   = (4 + 3 + 6) / 18    = 13/18
    # accuracy = 4 correct / 6
    assert uf1(y_true, y_pred) == pytest.approx(59 / 90, abs=1e-12)
    assert uar(y_true, y_pred) == pytest.approx(13 / 18, abs=1e-12)
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6, abs=1e-12)
    np.testing.assert_array_equal(confusion(y_true, y_pred), [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    cs = class_scores(y_true, y_pred)
    np.testing.assert_allclose(cs["f1"], [4 / 5, 1 / 2, 2 / 3])
    np.testing.assert_allclose(cs["recall"], [2 / 3, 1 / 2, 1])
    assert cs["tp"].tolist() == [2, 1, 1]
    assert cs["fp"].tolist() == [0, 1, 1]
    assert cs["fn"].tolist() == [1, 1, 0]


def test_string_labels_and_label_order():
    names = ("negative", "positive", "surprise")
    y_true = ["negative", "negative", "positive", "surprise"]
    y_pred = ["negative", "positive", "positive", "negative"]
    # negative: n=2, pred 2, TP=1 -> F1 1/2, rec 1/2; positive: n=1, pred 2, TP=1 -> F1 2/3,
    # rec 1; surprise: n=1, pred 0, TP=0 -> F1 0, rec 0.  UF1 = (1/2+2/3)/3 = 7/18, UAR = 1/2
    assert uf1(y_true, y_pred, labels=names) == pytest.approx(7 / 18)
    assert uar(y_true, y_pred, labels=names) == pytest.approx(1 / 2)
    m = confusion(y_true, y_pred, labels=names[::-1])  # rows/cols follow the given order
    np.testing.assert_array_equal(m, confusion_matrix(y_true, y_pred, labels=list(names[::-1])))


# --------------------------------------------------------------------------- scikit-learn
def test_equal_to_sklearn_on_random_predictions():
    rng = np.random.default_rng(1234)
    for trial in range(150):
        n = int(rng.integers(1, 40))
        # sometimes draw from a subset of classes so absent classes are exercised
        pool_true = rng.choice(3, size=int(rng.integers(1, 4)), replace=False)
        pool_pred = rng.choice(3, size=int(rng.integers(1, 4)), replace=False)
        y_true = rng.choice(pool_true, size=n)
        y_pred = np.where(rng.random(n) < 0.5, y_true, rng.choice(pool_pred, size=n))
        present = sorted(set(y_true) | set(y_pred))
        present_true = sorted(set(y_true))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_f1 = f1_score(y_true, y_pred, average="macro", labels=present)
            ref_rec = recall_score(y_true, y_pred, average="macro", labels=present_true)
            ref_bal = balanced_accuracy_score(y_true, y_pred)
        assert uf1(y_true, y_pred) == pytest.approx(ref_f1, abs=1e-12), trial
        assert uar(y_true, y_pred) == pytest.approx(ref_rec, abs=1e-12), trial
        assert uar(y_true, y_pred) == pytest.approx(ref_bal, abs=1e-12), trial
        np.testing.assert_array_equal(confusion(y_true, y_pred),
                                      confusion_matrix(y_true, y_pred, labels=[0, 1, 2]))


def test_all_classes_present_is_plain_macro_over_labels():
    rng = np.random.default_rng(7)
    y_true = np.r_[[0, 1, 2], rng.integers(0, 3, 200)]
    y_pred = rng.integers(0, 3, 203)
    y_pred[:3] = [0, 1, 2]
    assert uf1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", labels=[0, 1, 2]), abs=1e-12)
    assert uar(y_true, y_pred) == pytest.approx(
        recall_score(y_true, y_pred, average="macro", labels=[0, 1, 2]), abs=1e-12)


# --------------------------------------------------------------------------- absent classes
def test_class_absent_from_truth_and_prediction_is_excluded():
    y_true, y_pred = [0, 0, 1], [0, 1, 1]
    # class 0: n=2, pred 1, TP=1 -> F1 2/3, rec 1/2; class 1: n=1, pred 2, TP=1 -> F1 2/3,
    # rec 1; class 2: no true, no predicted clip -> left out of both means.
    assert uf1(y_true, y_pred) == pytest.approx(2 / 3)  # not (2/3 + 2/3 + 0) / 3 = 4/9
    assert uar(y_true, y_pred) == pytest.approx(3 / 4)  # not (1/2 + 1 + 0) / 3 = 1/2
    cs = class_scores(y_true, y_pred)
    assert cs["in_uf1"].tolist() == [True, True, False]
    assert cs["in_uar"].tolist() == [True, True, False]
    assert uf1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro",
                                                         labels=[0, 1]))


def test_class_predicted_but_absent_from_truth():
    y_true, y_pred = [0, 0, 1], [0, 2, 1]
    # class 0: n=2, pred 1, TP=1 -> F1 2/3, rec 1/2; class 1: n=1, pred 1, TP=1 -> F1 1, rec 1
    # class 2: n=0, pred 1 -> F1 = 0/(0+1+0) = 0 (kept: a false alarm is penalised);
    #          recall 0/0 -> left out of UAR.
    assert uf1(y_true, y_pred) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert uar(y_true, y_pred) == pytest.approx((1 / 2 + 1) / 2)
    cs = class_scores(y_true, y_pred)
    assert cs["in_uf1"].tolist() == [True, True, True]
    assert cs["in_uar"].tolist() == [True, True, False]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert uar(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_single_class_subject():
    assert uf1([2, 2], [2, 2]) == 1.0 and uar([2, 2], [2, 2]) == 1.0
    assert uf1([2, 2], [0, 0]) == 0.0 and uar([2, 2], [0, 0]) == 0.0


# --------------------------------------------------------------------------- frames
def _crafted():
    rows = [(f"a{i}", "A", "d1", 0, 0) for i in range(6)]  # subject A: 6 clips, all right
    rows += [("b0", "B", "d1", 1, 2), ("b1", "B", "d1", 2, 1)]  # subject B: 2 clips, wrong
    return _frame(rows)


def test_pooled_differs_from_subject_mean():
    df = _crafted()
    pooled = pooled_scores(df)
    # pooled: class 0 F1 1, rec 1; class 1: n=1, pred 1, TP 0 -> 0, 0; class 2 likewise
    # UF1 = UAR = (1 + 0 + 0) / 3 = 1/3;  accuracy 6/8
    assert pooled["uf1"] == pytest.approx(1 / 3)
    assert pooled["uar"] == pytest.approx(1 / 3)
    assert pooled["accuracy"] == pytest.approx(6 / 8)
    assert pooled["n_clips"] == 8
    subj = per_subject_scores(df)
    # A: only class 0 present -> UF1 1, UAR 1.  B: classes 1, 2 -> UF1 0, UAR 0.  mean 1/2
    assert subj.table.set_index("subject")["uf1"].to_dict() == {"A": 1.0, "B": 0.0}
    assert subj.table.set_index("subject")["n_clips"].to_dict() == {"A": 6, "B": 2}
    assert subj.mean["uf1"] == pytest.approx(0.5)
    assert subj.mean["uar"] == pytest.approx(0.5)
    assert subj.mean["accuracy"] == pytest.approx(0.5)
    assert subj.mean["n_subjects"] == 2
    assert subj.mean["uf1"] != pytest.approx(pooled["uf1"])


def test_subject_ids_are_scoped_by_dataset():
    # the same subject id in two datasets is two folds
    df = _frame([("c1", "01", "casme2", 0, 0), ("c2", "01", "casme2", 1, 1),
                 ("s1", "01", "smic", 2, 0)])
    t = per_subject_scores(df).table
    assert list(zip(t["dataset"], t["subject"])) == [("casme2", "01"), ("smic", "01")]
    assert t["uf1"].tolist() == [1.0, 0.0]


def test_same_clip_name_in_two_subjects_is_allowed():
    # CASME II reuses clip names across subjects (sub01/EP02_01f, sub02/EP02_01f)
    df = _frame([("EP02_01f", "sub01", "casme2", 0, 0), ("EP02_01f", "sub02", "casme2", 1, 1)])
    assert pooled_scores(df)["n_clips"] == 2
    assert per_subject_scores(df).mean["n_subjects"] == 2


def test_per_dataset_split():
    rng = np.random.default_rng(3)
    rows = []
    for ds in ("smic", "casme2", "samm"):
        for s in range(4):
            for c in range(5):
                yt = int(rng.integers(0, 3))
                yp = yt if rng.random() < 0.5 else int(rng.integers(0, 3))
                rows.append((f"{ds}{s}_{c}", f"{s:02d}", ds, yt, yp))
    df = _frame(rows)
    table = per_dataset_scores(df)
    assert list(table.index) == ["smic", "casme2", "samm"]
    for ds in table.index:
        sub = df[df["dataset"] == ds]
        assert table.loc[ds, "uf1"] == pytest.approx(uf1(sub["y_true"], sub["y_pred"]))
        assert table.loc[ds, "uar"] == pytest.approx(uar(sub["y_true"], sub["y_pred"]))
        assert table.loc[ds, "accuracy"] == pytest.approx(accuracy(sub["y_true"], sub["y_pred"]))
        assert table.loc[ds, "n_clips"] == 20 and table.loc[ds, "n_subjects"] == 4
        per_subj = [uf1(g["y_true"], g["y_pred"]) for _, g in sub.groupby("subject")]
        assert table.loc[ds, "uf1_subject_mean"] == pytest.approx(np.mean(per_subj))
    # the pooled score is not the mean of the per-dataset scores in general, but it is the
    # score of the concatenation
    assert pooled_scores(df)["uf1"] == pytest.approx(uf1(df["y_true"], df["y_pred"]))


# --------------------------------------------------------------------------- validation
def test_missing_column_error_names_it():
    df = _crafted().drop(columns=["subject"])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['subject'\]"):
        pooled_scores(df)
    with pytest.raises(TypeError, match="DataFrame"):
        pooled_scores(df.to_dict())
    with pytest.raises(ValueError, match="no rows"):
        pooled_scores(_frame([]))


def test_label_out_of_range():
    with pytest.raises(ValueError, match=r"y_pred has values outside labels=\[0, 1, 2\].*3"):
        uf1([0, 1, 2], [0, 1, 3])
    with pytest.raises(ValueError, match="y_true has values outside"):
        uar([0, -1], [0, 0])
    df = _crafted()
    df.loc[0, "y_true"] = 5
    with pytest.raises(ValueError, match="y_true has values outside"):
        per_subject_scores(df)


def test_other_validation_errors():
    with pytest.raises(ValueError, match="differ in length"):
        uf1([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        uar([], [])
    with pytest.raises(ValueError, match="one-dimensional"):
        uf1([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="duplicates"):
        uf1([0], [0], labels=(0, 0, 1))
    with pytest.raises(ValueError, match="outside"):
        uf1([0.5], [0])
    df = _crafted().astype({"y_pred": float})
    df.loc[1, "y_pred"] = np.nan
    with pytest.raises(ValueError, match="'y_pred' has 1 missing"):
        pooled_scores(df)
    dup = pd.concat([_crafted(), _crafted().iloc[:1]])
    with pytest.raises(ValueError, match="one row per test clip"):
        pooled_scores(dup)


def test_validate_normalises_types():
    df = _crafted()
    df["subject"] = [6] * 6 + [7, 7]
    df["y_true"] = df["y_true"].astype(float)  # e.g. read back from a CSV with blanks
    out = validate_predictions(df)
    assert out["subject"].tolist()[0] == "6"
    assert out["y_true"].dtype == np.int64
    assert set(PREDICTION_COLUMNS) <= set(out.columns)
    assert df["subject"].tolist()[0] == 6  # the input is not modified
