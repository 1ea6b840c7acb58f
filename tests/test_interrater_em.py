"""Dawid-Skene truth inference (nucls_utils.interrater.em): recovery of planted truth and confusion matrices,
batching, degenerate inputs, the study's post-processing, and agreement with crowd-kit's DawidSkene."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from nucls_utils.interrater.em import (
    PROB_PREFIX,
    boundary_em,
    dawid_skene,
    encode_labels,
    fit_labels,
    group_posteriors,
    infer_labels,
    initial_confusion,
    majority_vote,
)


def planted(rng: np.random.Generator, n_items: int, n_classes: int, accuracy: np.ndarray, p_missing: float,
            uniform_errors: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answers of workers with planted confusion matrices.

    Worker w answers the true class with probability ``accuracy[w]``; the rest of the row is a Dirichlet draw
    (systematic confusions) or uniform. Returns labels (I, W) with -1 = missing, truth (I,), confusion (W, K, K).
    """
    n_workers, k = len(accuracy), n_classes
    if uniform_errors:
        off = np.full((n_workers, k, k - 1), 1.0 / (k - 1))
    else:
        off = rng.dirichlet(np.ones(k - 1), size=(n_workers, k))
    cms = np.zeros((n_workers, k, k))
    cms[:, ~np.eye(k, dtype=bool)] = (off * (1.0 - accuracy)[:, None, None]).reshape(n_workers, -1)
    cms[:, np.arange(k), np.arange(k)] = accuracy[:, None]
    truth = rng.integers(0, k, n_items)
    cum = np.cumsum(cms[np.arange(n_workers)[None, :], truth[:, None]], axis=-1)
    labels = (rng.random((n_items, n_workers))[..., None] > cum).sum(-1).clip(max=k - 1)
    labels[rng.random((n_items, n_workers)) < p_missing] = -1
    return labels, truth, cms


def as_frame(labels: np.ndarray, classes: list[str]) -> pd.DataFrame:
    names = np.array(classes + ["DidNotAnnotateFOV"], dtype=object)
    return pd.DataFrame(names[labels], index=[f"anchor{i}" for i in range(len(labels))],
                        columns=[f"NP.{w + 1}" for w in range(labels.shape[1])])


CLASSES6 = ["fibroblast", "lymphocyte", "plasma_cell", "tumor", "undetected", "unlabeled"]  # sorted


@pytest.fixture(scope="module")
def mixed() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """6 classes, 1500 items, 16 workers (6 good, 10 mediocre), 30 % of answers missing."""
    rng = np.random.default_rng(11)
    accuracy = np.r_[rng.uniform(0.75, 0.95, 6), rng.uniform(0.35, 0.6, 10)]
    return planted(rng, 1500, 6, accuracy, 0.3)


def test_recovers_planted_truth_and_confusion(mixed):
    labels, truth, cms = mixed
    res = dawid_skene(labels, 6)
    assert res.posteriors.shape == (1500, 6) and res.confusion.shape == (16, 6, 6) and res.priors.shape == (6,)
    assert res.n_iter == 70 and not res.converged
    np.testing.assert_allclose(res.posteriors.sum(-1), 1.0)
    np.testing.assert_allclose(res.confusion.sum(-1), 1.0)
    assert (res.labels == truth).mean() >= 0.95
    # rows with at least 100 answered items of that true class
    coverage = np.stack([np.bincount(truth[labels[:, w] >= 0], minlength=6) for w in range(16)])
    well = coverage >= 100
    assert well.mean() > 0.9
    assert np.abs(res.confusion - cms).sum(-1)[well].mean() / 6 < 0.05
    np.testing.assert_allclose(res.priors, np.bincount(truth, minlength=6) / len(truth), atol=0.02)


def test_string_api_recovers_confusion_frames(mixed):
    labels, truth, cms = mixed
    fit = fit_labels(as_frame(labels, CLASSES6))
    assert fit.classes == CLASSES6
    cm = fit.confusion["NP.1"]
    assert list(cm.index) == CLASSES6 and list(cm.columns) == CLASSES6
    assert cm.index.name == "true" and cm.columns.name == "given"
    np.testing.assert_allclose(cm.to_numpy(), dawid_skene(labels, 6).confusion[0])
    assert np.abs(cm.to_numpy() - cms[0]).mean() < 0.05
    assert (fit.table["label"].to_numpy() == np.array(CLASSES6, dtype=object)[truth]).mean() >= 0.95
    np.testing.assert_allclose(fit.priors.sum(), 1.0)


def test_em_beats_majority_vote_with_mixed_reliability():
    rng = np.random.default_rng(5)
    k = 6
    accuracy = np.r_[np.full(3, 0.9), np.full(14, 0.25)]  # 3 good workers, 14 barely better than chance (1/6)
    labels, truth, _ = planted(rng, 1200, k, accuracy, 0.1)
    frame = as_frame(labels, CLASSES6)
    truth_names = np.array(CLASSES6, dtype=object)[truth]
    em_acc = (infer_labels(frame)["label"].to_numpy() == truth_names).mean()
    mv_acc = (majority_vote(frame)["label"].to_numpy() == truth_names).mean()
    assert em_acc >= 0.95
    assert em_acc > mv_acc + 0.1


def test_batched_equals_separate_calls():
    rng = np.random.default_rng(3)
    batch = np.stack([planted(rng, 300, 5, rng.uniform(0.3, 0.9, 8), 0.4)[0] for _ in range(6)])
    batch[2, 7] = -1  # an item without answers in one problem
    for tol in (None, 1e-6):
        together = dawid_skene(batch, 5, tol=tol)
        chunked = dawid_skene(batch, 5, tol=tol, max_chunk_answers=2 * 300 * 8)  # 3 chunks of 2 problems
        for b in range(len(batch)):
            alone = dawid_skene(batch[b], 5, tol=tol)
            for res in (together, chunked):
                np.testing.assert_allclose(res.posteriors[b], alone.posteriors, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(res.confusion[b], alone.confusion, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(res.priors[b], alone.priors, rtol=1e-10, atol=1e-12)
                assert res.n_iter[b] == alone.n_iter and res.converged[b] == alone.converged
    assert together.posteriors.shape == (6, 300, 5) and together.confusion.shape == (6, 8, 5, 5)
    assert together.labels.shape == (6, 300)
    assert dawid_skene(batch[:0], 5).posteriors.shape == (0, 300, 5)


def test_observed_classes_only_matches_runs_on_observed_labels():
    """The study runs EM on the observed label set; a batched call can do the same per realisation."""
    rng = np.random.default_rng(4)
    k = 7
    batch = np.stack([planted(rng, 250, k, rng.uniform(0.4, 0.9, 6), 0.3)[0] for _ in range(4)])
    batch[1][batch[1] == 2] = 3  # realisation 1 never observes class 2, realisation 3 neither 0 nor 6
    batch[3][np.isin(batch[3], (0, 6))] = -1
    together = dawid_skene(batch, k, observed_classes_only=True)
    for b in range(len(batch)):
        seen = np.unique(batch[b][batch[b] >= 0])
        recode = np.full(k + 1, -1)
        recode[seen + 1] = np.arange(len(seen))
        alone = dawid_skene(recode[batch[b] + 1], len(seen))
        np.testing.assert_allclose(together.posteriors[b][:, seen], alone.posteriors, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(together.confusion[b][:, seen][:, :, seen], alone.confusion, rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(together.priors[b][seen], alone.priors, rtol=1e-10, atol=1e-12)
        unseen = np.setdiff1d(np.arange(k), seen)
        assert np.all(together.posteriors[b][:, unseen] == 0) and np.all(together.priors[b][unseen] == 0)
    plain = dawid_skene(batch[0], k, observed_classes_only=True)
    np.testing.assert_allclose(plain.posteriors, dawid_skene(batch[0], k).posteriors)  # all classes seen


def test_tolerance_stops_early_and_agrees(mixed):
    labels, _, _ = mixed
    full = dawid_skene(labels, 6)
    early = dawid_skene(labels, 6, tol=1e-6, n_iter=500)
    assert early.converged and early.n_iter < 500
    np.testing.assert_allclose(early.posteriors, full.posteriors, atol=1e-3)


def assert_finite(res, k):
    for arr in (res.posteriors, res.confusion, res.priors):
        assert np.all(np.isfinite(arr))
    np.testing.assert_allclose(res.posteriors.sum(-1), 1.0)
    np.testing.assert_allclose(res.confusion.sum(-1), 1.0)
    np.testing.assert_allclose(res.priors.sum(-1), 1.0)
    assert res.posteriors.shape[-1] == k


def test_degenerate_inputs_give_finite_output():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, (200, 5))  # class 4 of K=5 never observed; ~20 % missing
    labels[0] = -1  # no answers
    labels[:, 4] = -1  # a worker who answered nothing
    res = dawid_skene(labels, 5)
    assert_finite(res, 5)
    np.testing.assert_allclose(res.posteriors[0], res.priors, atol=1e-3)  # no evidence: roughly the prior
    np.testing.assert_allclose(res.confusion[4], initial_confusion(5))  # no answers: rows reset to init
    # missing-heavy: 95 % missing
    heavy = rng.integers(0, 6, (300, 12))
    heavy[rng.random(heavy.shape) < 0.95] = -1
    assert_finite(dawid_skene(heavy, 6), 6)
    # a single worker; a single class; all missing; no items
    assert_finite(dawid_skene(rng.integers(0, 3, (50, 1)), 3), 3)
    assert_finite(dawid_skene(np.zeros((10, 3), dtype=int), 1), 1)
    assert_finite(dawid_skene(np.full((10, 3), -1), 4), 4)
    assert_finite(dawid_skene(np.full((10, 3), -1), 4, observed_classes_only=True), 4)
    one_seen = dawid_skene(np.full((10, 3), 2), 4, observed_classes_only=True)
    assert np.all(np.isfinite(one_seen.posteriors)) and np.all(one_seen.labels == 2)
    empty = dawid_skene(np.zeros((0, 3), dtype=int), 4)
    assert empty.posteriors.shape == (0, 4) and np.all(np.isfinite(empty.confusion))
    # q0 = 1: identity confusion matrices, so conflicting answers make every class impossible at first
    ident = np.array([[0, 1], [0, 0], [1, 1], [2, 2]])
    first = dawid_skene(ident, 3, q0=1.0, n_iter=1)
    np.testing.assert_allclose(first.posteriors[0], 1 / 3)  # every term zero -> uniform
    np.testing.assert_allclose(first.posteriors[1], [1, 0, 0])
    assert_finite(dawid_skene(ident, 3, q0=1.0), 3)


def test_zero_mass_row_is_reset_to_initial_pattern():
    # q0 = 1 and unanimous answers give one-hot posteriors, so worker 1 (who only saw class-0 items) has no
    # posterior mass on true classes 1 and 2: those rows fall back to the initial pattern (identity here).
    labels = np.array([[0, 0], [0, 0], [1, -1], [2, -1]])
    res = dawid_skene(labels, 3, q0=1.0, n_iter=1)
    np.testing.assert_allclose(res.confusion[1], np.eye(3))
    res = dawid_skene(labels, 3, q0=0.7, n_iter=1)
    assert np.all(res.confusion[1][1:, 0] == 1.0)  # posterior mass > 0, so estimated from the data


def test_invalid_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"0\.\.2 or -1.*first 3 at index \(1, 0\)"):
        dawid_skene(np.array([[0, 1], [3, 0]]), 3)
    with pytest.raises(ValueError, match="out-of-range"):
        dawid_skene(np.array([[0, -2]]), 3)
    with pytest.raises(TypeError, match="integer array"):
        dawid_skene(np.array([[0.0, 1.0]]), 3)
    with pytest.raises(ValueError, match="shape"):
        dawid_skene(np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="q0"):
        dawid_skene(np.array([[0, 1]]), 3, q0=0.0)
    with pytest.raises(ValueError, match="prior"):
        dawid_skene(np.array([[0, 1]]), 3, prior=np.ones(2))
    frame = pd.DataFrame({"NP.1": ["tumor", "lymphocyte"], "NP.2": ["tumor", "stroma"]}, index=["a", "b"])
    with pytest.raises(ValueError, match=r"\['stroma'\] are not in classes"):
        infer_labels(frame, classes=["lymphocyte", "tumor"])
    with pytest.raises(ValueError, match="'stroma' \\(item 'b', worker 'NP.2'\\)"):
        encode_labels(frame, ["lymphocyte", "tumor"])


def test_prior_argument_and_batched_prior():
    labels = np.array([[0, -1], [-1, -1]])
    res = dawid_skene(labels, 2, prior=np.array([1.0, 3.0]), n_iter=1)
    np.testing.assert_allclose(res.posteriors[1], [0.25, 0.75])  # no answers: the initial prior
    batched = dawid_skene(np.stack([labels, labels]), 2, prior=np.array([[1.0, 1.0], [1.0, 3.0]]), n_iter=1)
    np.testing.assert_allclose(batched.posteriors[:, 1], [[0.5, 0.5], [0.25, 0.75]])


def discordant_frame() -> pd.DataFrame:
    """Workers A and B say tumor where C says mitotic_figure; item 'x' has only C's mitotic_figure."""
    rows = {f"t{j}": {"A": "tumor", "B": "tumor", "C": "mitotic_figure"} for j in range(40)}
    rows.update({f"l{j}": {"A": "lymphocyte", "B": "lymphocyte", "C": "lymphocyte"} for j in range(40)})
    rows["x"] = {"A": np.nan, "B": "DidNotAnnotateFOV", "C": "mitotic_figure"}
    rows["none"] = {"A": np.nan, "B": "DidNotAnnotateFOV", "C": np.nan}
    rows["u"] = {"A": "undetected", "B": "undetected", "C": "undetected"}
    rows["v"] = {"A": "unlabeled", "B": "lymphocyte", "C": "lymphocyte"}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_infer_labels_postprocessing():
    frame = discordant_frame()
    table = infer_labels(frame, classes=["apoptotic_body", "lymphocyte", "mitotic_figure", "tumor", "undetected",
                                         "unlabeled"])
    prob_cols = [c for c in table.columns if c.startswith(PROB_PREFIX)]
    assert prob_cols == [f"{PROB_PREFIX}{c}" for c in ("apoptotic_body", "lymphocyte", "mitotic_figure", "tumor",
                                                       "undetected", "unlabeled")]
    assert list(table.columns[len(prob_cols):]) == ["label", "confidence", "label_count"]
    assert (table[f"{PROB_PREFIX}apoptotic_body"] == 0).all()  # never observed
    np.testing.assert_allclose(table[prob_cols].sum(axis=1), 1.0)
    assert table.loc["t0", "label"] == "tumor" and table.loc["t0", "label_count"] == 2
    assert table.loc["l0", "label"] == "lymphocyte" and table.loc["l0", "label_count"] == 3
    # C's mitotic_figure means tumor, which nobody said on 'x': replaced by unlabeled with P(unlabeled)
    assert table.loc["x", f"{PROB_PREFIX}tumor"] > 0.5
    assert table.loc["x", "label"] == "unlabeled"
    assert table.loc["x", "confidence"] == table.loc["x", f"{PROB_PREFIX}unlabeled"]
    assert table.loc["x", "label_count"] == 0
    # no non-missing answer: NaN label and confidence, probabilities kept
    assert pd.isna(table.loc["none", "label"]) and np.isnan(table.loc["none", "confidence"])
    assert table.loc["none", "label_count"] == 0
    # 'undetected' is a real label
    assert table.loc["u", "label"] == "undetected" and table.loc["u", "label_count"] == 3
    assert table.loc["v", "label"] == "lymphocyte"
    # without an 'unlabeled' class the replaced confidence is 0
    no_unl = infer_labels(frame.replace("unlabeled", "lymphocyte"))
    assert no_unl.loc["x", "label"] == "unlabeled" and no_unl.loc["x", "confidence"] == 0.0
    assert f"{PROB_PREFIX}unlabeled" not in no_unl.columns
    # the reference's n_matches < 1 blanking, on request
    blanked = infer_labels(frame, blank_undetected=True)
    assert pd.isna(blanked.loc["u", "label"]) and blanked.loc["u", "label_count"] == 0
    assert blanked.loc["t0", "label"] == "tumor"


def test_infer_labels_all_missing():
    frame = pd.DataFrame({"NP.1": [np.nan, "DidNotAnnotateFOV"], "NP.2": [np.nan, np.nan]}, index=["a", "b"])
    fit = fit_labels(frame, classes=["tumor", "undetected"])
    assert fit.result is None and fit.classes == []
    assert fit.table["label"].isna().all() and (fit.table[f"{PROB_PREFIX}tumor"] == 0).all()
    assert majority_vote(frame)["label"].isna().all()


def test_majority_vote_tie_break():
    frame = pd.DataFrame({"w1": ["tumor", "tumor", np.nan, "undetected"],
                          "w2": ["lymphocyte", "tumor", np.nan, "DidNotAnnotateFOV"],
                          "w3": [np.nan, "lymphocyte", "DidNotAnnotateFOV", np.nan]}, index=list("abcd"))
    mv = majority_vote(frame)
    assert list(mv["label"].iloc[[0, 1, 3]]) == ["lymphocyte", "tumor", "undetected"]  # tie: alphabetical
    assert list(mv["count"]) == [1, 2, 0, 1]
    assert pd.isna(mv.loc["c", "label"])
    assert majority_vote(frame, classes=["tumor", "lymphocyte", "undetected"]).loc["a", "label"] == "tumor"


def test_boundary_em():
    rng = np.random.default_rng(2)
    n_items, n_workers = 600, 12
    correct = rng.random(n_items) < 0.6
    detected = rng.random((n_items, n_workers)) < 0.7
    detected[0] = False
    sens, spec = rng.uniform(0.7, 0.95, n_workers), rng.uniform(0.7, 0.95, n_workers)
    u = rng.random((n_items, n_workers))
    clicked = np.where(correct[:, None], u < sens, u > spec)
    clicked[0] = True  # clicks without detection are ignored
    idx = pd.Index([f"anchor{i}" for i in range(n_items)])
    cols = [f"NP.{w}" for w in range(n_workers)]
    out = boundary_em(pd.DataFrame(clicked, idx, cols), pd.DataFrame(detected, idx, cols))
    assert list(out.columns) == ["decision", "probability", "n_detected", "n_clicked"]
    assert out["decision"].dtype == "boolean"
    assert pd.isna(out["decision"].iloc[0]) and out["n_clicked"].iloc[0] == 0
    dec = out["decision"].iloc[1:].to_numpy(dtype=bool)
    assert (dec == correct[1:]).mean() >= 0.95
    assert np.all((out["probability"] >= 0) & (out["probability"] <= 1))
    with pytest.raises(ValueError, match="same index"):
        boundary_em(pd.DataFrame(clicked, idx, cols), pd.DataFrame(detected, idx, cols).iloc[1:])
    with pytest.raises(ValueError, match="bool"):
        boundary_em(pd.DataFrame(clicked.astype(int), idx, cols), pd.DataFrame(detected, idx, cols))


def test_group_posteriors():
    raw = ["mitotic_figure", "tumor", "lymphocyte", "plasma_cell", "fibroblast", "undetected", "unlabeled"]
    probs = pd.DataFrame([[0.3, 0.1, 0.2, 0.0, 0.25, 0.15, 0.0],
                          [0.0, 0.0, 0.3, 0.3, 0.0, 0.4, 0.0],
                          [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4]], index=list("abc"),
                         columns=[f"{PROB_PREFIX}{c}" for c in raw])
    probs["label"] = ["mitotic_figure", "undetected", np.nan]
    sup = group_posteriors(probs, "super")
    assert list(sup.columns) == [f"{PROB_PREFIX}{g}" for g in ("tumor_any", "nonTIL_stromal", "sTIL", "AMBIGUOUS",
                                                             "undetected")] + ["label", "confidence"]
    np.testing.assert_allclose(sup.loc["a", f"{PROB_PREFIX}tumor_any"], 0.4)
    np.testing.assert_allclose(sup.iloc[:, :5].sum(axis=1), 1.0)
    assert sup.loc["a", "label"] == "tumor_any" and sup.loc["b", "label"] == "sTIL"
    np.testing.assert_allclose(sup.loc["b", "confidence"], 0.6)
    assert pd.isna(sup.loc["c", "label"])  # blanked rows stay blank
    main = group_posteriors(probs.drop(columns="label"), "main")
    assert main.loc["a", "label"] == "tumor_mitotic" and main.loc["b", "label"] == "undetected"
    assert main.loc["c", "label"] == "AMBIGUOUS"
    bare = group_posteriors(probs.rename(columns=lambda c: c.removeprefix(PROB_PREFIX)), "super", prefix="")
    assert bare.loc["a", "label"] == "tumor_any" and "tumor_any" in bare.columns


def test_agrees_with_crowdkit():
    """Same answers through crowd-kit's DawidSkene.

    Setting: crowd-kit starts from majority-vote posteriors, ours from the study's q0 = 0.7 confusion matrices;
    both run 70 iterations (crowd-kit with tol=-inf, because its default tol=1e-5 on the change of its evidence
    lower bound stops it after 4 iterations here, before the posteriors settle). On this data (8 classes, 1000
    items, 12 workers of accuracy 0.5-0.9, 25 % missing) both converge to the same fixed point: labels agree on
    >= 99 % of items (all of them, in fact) and posteriors to 1e-6.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aggregation = pytest.importorskip("crowdkit.aggregation")
    rng = np.random.default_rng(7)
    labels, truth, _ = planted(rng, 1000, 8, rng.uniform(0.5, 0.9, 12), 0.25)
    ours = dawid_skene(labels, 8)
    i, w = np.nonzero(labels >= 0)
    data = pd.DataFrame({"task": i, "worker": w, "label": labels[i, w]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crowd-kit 1.4.2 triggers pandas deprecation warnings
        model = aggregation.DawidSkene(n_iter=70, tol=float("-inf"))
        theirs = model.fit_predict(data)
        probas = model.probas_
    tasks = theirs.index.to_numpy()
    assert (theirs.to_numpy() == ours.labels[tasks]).mean() >= 0.99
    assert (ours.labels == truth).mean() >= 0.95
    their_p = probas.reindex(columns=range(8), fill_value=0.0).to_numpy()
    assert np.abs(their_p - ours.posteriors[probas.index.to_numpy()]).max() < 1e-6
