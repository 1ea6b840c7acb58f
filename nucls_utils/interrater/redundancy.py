"""NP-redundancy simulation: how accurate is the inferred NP-label when each FOV gets only k NPs? (paper Fig 3e;
notes section 2d).

For every realisation and every k, each FOV keeps k of the NPs who annotated it (drawn uniformly without
replacement; an NP may be drawn in any number of FOVs) and the other NPs' labels in that FOV become missing. The
Dawid-Skene EM then re-infers the NP-label of every anchor jointly, and the result is scored against the P-truth.
Realisations are *batched*: many (realisation, k) label matrices are stacked into one ``(B, I, W)`` array and
inferred by one vectorised EM call.

Inputs are plain pandas objects, already grouped to the class level of the study (super-classes in the paper) by
the caller (:func:`nucls_utils.taxonomy.map_classes`), with AMBIGUOUS anchors removed:

* ``labels``: anchors x NPs, strings: a class, ``'undetected'``, or ``'DidNotAnnotateFOV'``/NaN (missing);
* ``fov_of_anchor``: anchor -> FOV name;
* ``truth``: anchor -> P-truth label; NaN or ``'undetected'`` = not a real nucleus.

Paper reading: the NP-label improves up to about 6 NPs per FOV, then plateaus; stromal nuclei need more NPs. The
paper plots only realisations whose total number of distinct NPs is 18 (``df[df.n_unique_NPs == 18]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from nucls_utils.evaluation import f1_from_counts, mcc_from_counts, roc_auc_micro_macro
from nucls_utils.interrater.agreement import NOT_ANNOTATED, UNDETECTED

from ..progress import tqdm

__all__ = ["encode_labels", "restrict_to_dense_fovs", "draw_np_subsets", "simulate_redundancy"]


def encode_labels(labels: pd.DataFrame, classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a wide label frame for the EM: code = position in ``classes``, -1 = missing.

    Parameters
    ----------
    labels : anchors x participants strings (``DidNotAnnotateFOV`` and NaN are missing).
    classes : the categories, including ``'undetected'``; default ``['undetected'] + sorted(other labels)``.

    Returns
    -------
    codes : (I, W) int64 ndarray; categories : list of K labels.
    """
    v = labels.to_numpy(dtype=object)
    observed = ~pd.isna(v) & (v != NOT_ANNOTATED)
    seen = {str(x) for x in v[observed]}
    if classes is None:
        classes = [UNDETECTED] + sorted(seen - {UNDETECTED})
    classes = list(classes)
    if UNDETECTED not in classes:
        raise ValueError(f"classes must include {UNDETECTED!r}: {classes}")
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = sorted(seen - set(lookup))
    if unknown:
        raise ValueError(f"labels not in classes: {unknown}")
    codes = np.full(v.shape, -1, dtype=np.int64)
    codes[observed] = [lookup[x] for x in v[observed]]
    return codes, classes


def _fov_structure(labels: pd.DataFrame, fov_of_anchor: pd.Series, codes: np.ndarray):
    fov = fov_of_anchor.reindex(labels.index)
    if fov.isna().any():
        missing = labels.index[fov.isna().to_numpy()]
        raise ValueError(f"fov_of_anchor lacks {len(missing)} anchors, e.g. {list(missing[:3])}")
    fov_names, fov_codes = np.unique(fov.to_numpy().astype(str), return_inverse=True)
    annotated = np.zeros((len(fov_names), codes.shape[1]), dtype=bool)
    np.logical_or.at(annotated, fov_codes, codes >= 0)
    return fov_names, fov_codes, annotated


def restrict_to_dense_fovs(
    labels: pd.DataFrame, fov_of_anchor: pd.Series, min_nps: int = 16
) -> tuple[pd.DataFrame, pd.Series]:
    """The simulation's population (notes 2d): FOVs annotated by at least ``min_nps`` NPs, and the NPs who
    annotated at least one of them.

    Returns
    -------
    (labels, fov_of_anchor) restricted to those anchors and NP columns.
    """
    codes, _ = encode_labels(labels)
    fov_names, fov_codes, annotated = _fov_structure(labels, fov_of_anchor, codes)
    dense = annotated.sum(axis=1) >= min_nps
    keep_rows = dense[fov_codes]
    keep_cols = annotated[dense].any(axis=0)
    sub = labels.loc[keep_rows, labels.columns[keep_cols]]
    return sub, fov_of_anchor.reindex(sub.index)


def draw_np_subsets(annotated: np.ndarray, ks: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Per FOV, draw k of its annotators uniformly without replacement, for each k (independent draws).

    Parameters
    ----------
    annotated : (F, W) bool, who annotated each FOV.
    ks : the numbers of NPs per FOV; a FOV with fewer than k annotators keeps all of them.
    rng : numpy Generator.

    Returns
    -------
    (len(ks), F, W) bool ndarray of the kept NPs.
    """
    ks = np.asarray(list(ks), dtype=int)
    keys = rng.random((len(ks),) + annotated.shape)
    keys[:, ~annotated] = np.inf
    ranks = np.argsort(np.argsort(keys, axis=-1, kind="stable"), axis=-1, kind="stable")
    return (ranks < ks[:, None, None]) & annotated[None]


def _default_em() -> Callable:
    from nucls_utils.interrater.em import dawid_skene

    return dawid_skene


def simulate_redundancy(
    labels: pd.DataFrame,
    fov_of_anchor: pd.Series,
    truth: pd.Series,
    ks: Iterable[int] = range(2, 16),
    n_realisations: int = 100,
    rng: np.random.Generator | None = None,
    em: Callable | None = None,
    classes: Sequence[str] | None = None,
    batch: int = 32,
    q0: float = 0.7,
    n_iter: int = 70,
    progress: bool = True,
) -> pd.DataFrame:
    """Accuracy of the EM-inferred NP-label against the P-truth when each FOV keeps only k NPs (notes 2d).

    For each realisation r and each k (independent draws, in the order r, then k — so the result for a seed does
    not depend on ``batch``):

    1. per FOV, k NPs are drawn uniformly without replacement among those who annotated it (labels not
       missing in that FOV); the others' labels there become missing. ``n_unique_NPs`` = how many distinct NPs
       were drawn over all FOVs;
    2. the EM (``undetected`` is a class) runs on all anchors jointly;
    3. scores against the P-truth (real = truth is a class, not NaN/``'undetected'``):

       * detection: TP = real anchors whose NP-label is a class; FN = real anchors labelled ``undetected``;
         FP = non-real anchors labelled a class; ``det_f1`` = 2TP / (2TP + FP + FN). An anchor to which no drawn
         NP gave a class counts as ``undetected`` whatever the posterior says;
       * classification (real anchors with a class NP-label): one-vs-rest tables of all classes (the categories
         other than ``undetected``, plus any truth class the NPs never used) summed, ``mcc`` = MCC of that pooled
         table (:func:`nucls_utils.evaluation.one_vs_rest_counts`);
       * ROC on all real anchors: the EM probabilities of the classes present in the truth, renormalised over
         them; ``auroc_micro``, ``auroc_macro`` (area of the interpolated mean ROC curve) and
         ``auroc_<class>`` (:func:`nucls_utils.evaluation.roc_auc_micro_macro`).

    Parameters
    ----------
    labels : anchors x NPs labels, already grouped to the wanted classes by the caller (see module docstring).
    fov_of_anchor : anchor -> FOV.
    truth : anchor -> grouped P-truth label (NaN or ``'undetected'`` = not a nucleus); missing anchors = NaN.
    ks : the numbers of NPs per FOV (paper: 2..15).
    n_realisations : repetitions (paper: 1000).
    rng : numpy Generator; default ``np.random.default_rng(0)`` (the reference seeds its RNG with 0 once).
    em : ``em(codes (B, I, W) int with -1 missing, n_classes, q0=..., n_iter=...)`` returning an object with
        ``.posteriors`` (B, I, K) (or that array itself); default
        :func:`nucls_utils.interrater.em.dawid_skene`.
    classes : EM categories including ``'undetected'``; default ``['undetected'] + sorted(observed classes)``.
    batch : how many (realisation, k) problems one EM call infers together (memory ~ batch * I * W * K floats).
    q0, n_iter : EM settings (paper: 0.7 and 70).
    progress : show a tqdm bar.

    Returns
    -------
    Tidy DataFrame, one row per (realisation, k): realisation, k, n_unique_NPs, det_tp, det_fp, det_fn, det_f1,
    n_classified, mcc, auroc_micro, auroc_macro, auroc_<class> for each class present in the truth.
    """
    if rng is None:
        rng = np.random.default_rng(0)
    if em is None:
        em = _default_em()
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, not {ks}")
    if batch < 1:
        raise ValueError("batch must be >= 1")

    codes, cats = encode_labels(labels, classes)
    _, fov_codes, annotated = _fov_structure(labels, fov_of_anchor, codes)
    undet = cats.index(UNDETECTED)
    n_cat = len(cats)

    # truth in the classification class space: EM classes (minus 'undetected') + truth-only classes
    t = truth.reindex(labels.index)
    real = (t.notna() & (t != UNDETECTED) & (t != NOT_ANNOTATED)).to_numpy()
    t_real = t.to_numpy(dtype=object)[real].astype(str)
    cls_space = [c for c in cats if c != UNDETECTED]
    cls_space += sorted(set(t_real) - set(cls_space))
    n_cls = len(cls_space)
    space_idx = {c: i for i, c in enumerate(cls_space)}
    t_code = np.array([space_idx[c] for c in t_real], dtype=int)
    cat_to_space = np.array([space_idx.get(c, -1) for c in cats])  # 'undetected' -> -1
    roc_classes = [c for c in cls_space if c in set(t_real)]
    roc_cols = [cats.index(c) if c in cats else -1 for c in roc_classes]

    jobs: list[tuple[int, int, np.ndarray]] = []
    rows: list[dict] = []
    bar = tqdm(total=n_realisations * len(ks), desc="NP redundancy", unit="run", disable=not progress)

    def flush() -> None:
        sel = np.stack([j[2] for j in jobs])  # (B, F, W)
        masked = np.where(sel[:, fov_codes, :], codes[None], -1)  # (B, I, W)
        res = em(masked, n_cat, q0=q0, n_iter=n_iter)
        post = np.asarray(getattr(res, "posteriors", res), dtype=float)
        if post.shape != masked.shape[:2] + (n_cat,):
            raise ValueError(
                f"EM returned posteriors of shape {post.shape}, expected {masked.shape[:2] + (n_cat,)}"
            )
        gave_class = ((masked >= 0) & (masked != undet)).any(axis=2)  # (B, I)
        pred = post.argmax(axis=2)
        detected = (pred != undet) & gave_class
        tp = (detected & real).sum(axis=1)
        fn = (~detected & real).sum(axis=1)
        fp = (detected & ~real).sum(axis=1)
        f1 = f1_from_counts(tp, fp, fn)
        # pooled one-vs-rest over the classified real anchors: sum TP = correct, sum FP = sum FN = wrong,
        # sum TN = n_cls * n - correct - 2 * wrong
        det_real = detected[:, real]
        pred_space = cat_to_space[pred[:, real]]
        n = det_real.sum(axis=1)
        correct = (det_real & (pred_space == t_code[None])).sum(axis=1)
        wrong = n - correct
        mcc = mcc_from_counts(correct, wrong, n_cls * n - correct - 2 * wrong, wrong)
        mcc = np.where(n > 0, mcc, np.nan)
        for b, (r, k, s) in enumerate(jobs):
            row = {
                "realisation": r,
                "k": k,
                "n_unique_NPs": int(s.any(axis=0).sum()),
                "det_tp": int(tp[b]),
                "det_fp": int(fp[b]),
                "det_fn": int(fn[b]),
                "det_f1": float(f1[b]),
                "n_classified": int(n[b]),
                "mcc_pooled_ovr": float(mcc[b]),
            }
            if roc_classes:
                pr = post[b][real]
                prob = np.column_stack([pr[:, c] if c >= 0 else np.zeros(len(pr)) for c in roc_cols])
                tot = prob.sum(axis=1, keepdims=True)
                prob = np.where(tot > 0, prob / np.where(tot > 0, tot, 1.0), 1.0 / len(roc_classes))
                auc = roc_auc_micro_macro(t_real, prob, roc_classes)
                row["auroc_micro"], row["auroc_macro"] = auc["micro"], auc["macro"]
                row.update({f"auroc_{c}": auc["per_class"][c] for c in roc_classes})
            else:
                row["auroc_micro"] = row["auroc_macro"] = np.nan
            rows.append(row)
        bar.update(len(jobs))
        jobs.clear()

    try:
        for r in range(n_realisations):
            subsets = draw_np_subsets(annotated, ks, rng)
            for i, k in enumerate(ks):
                jobs.append((r, k, subsets[i]))
                if len(jobs) == batch:
                    flush()
        if jobs:
            flush()
    finally:
        bar.close()
    cols = [
        "realisation",
        "k",
        "n_unique_NPs",
        "det_tp",
        "det_fp",
        "det_fn",
        "det_f1",
        "n_classified",
        "mcc_pooled_ovr",
        "auroc_micro",
        "auroc_macro",
    ] + [f"auroc_{c}" for c in roc_classes]
    return pd.DataFrame(rows, columns=cols)
