"""Dawid-Skene truth inference, as the NuCLS study uses it (reference notes section 2b; simulation in 2d).

Items are anchors (clusters of boxes), workers are the participants of one group (Ps or NPs) and the labels are
the raw classes plus ``undetected`` ("a conscious decision not to annotate"); ``DidNotAnnotateFOV`` and NaN are
missing data. The algorithm follows the study's choices, not a textbook variant:

* initialisation: uniform class prior; every worker's confusion matrix has ``q0`` (0.7) on the diagonal and
  ``(1 - q0) / (K - 1)`` elsewhere (no majority-vote start);
* a fixed number of E-step/M-step iterations (70), with an optional tolerance on the change of the posteriors;
* no smoothing: a confusion-matrix row whose true class got no posterior mass from the worker's answers is reset
  to the initial ``q0`` pattern, and an item on which every true class is impossible gets the uniform ``1 / K``.

Implementation
--------------
The core (:func:`dawid_skene`) works on integer label arrays ``(I, W)`` or batches ``(B, I, W)`` of independent
problems (the redundancy simulation solves many realisations in one call; ``observed_classes_only=True`` gives
each realisation the study's observed-label set). The answers become a one-hot tensor
``onehot[b, i, w, l]``, stored as a sparse (CSR) matrix with rows ``(b, i)`` and columns ``(b, w, l)``,
block-diagonal over problems; missing answers have no entry. Both steps of an iteration are then one
sparse-times-dense product each, for all problems at once:

* E-step: ``log P(i, t) = log pi_t + sum_{w, l} onehot[i, w, l] * log CM[w, t, l]`` (log space, so products over
  many workers cannot underflow). Zero confusion entries are handled without ``0 * log 0``: their logarithm is
  replaced by a finite sentinel (-1e30) far below any real log-likelihood, so a class with an impossible answer
  gets probability exactly 0 after the log-sum-exp normalisation, and an item on which every class is
  impossible is detected and gets the uniform ``1 / K``. Probabilities below about 1e-304 of the item's most
  likely class are flushed to 0 (no difference at float64 precision; it keeps ``exp`` off its slow underflow
  path).
* M-step: ``counts[w, t, l] = sum_i P(i, t) * onehot[i, w, l]`` (the transposed one-hot times the posteriors).

There is no Python loop over items, workers or problems inside an iteration. The sparse one-hot costs one
product per answer instead of K (a dense float64 ``(B, I, W, K)`` one-hot with batched dense matrix products
measured 4 times slower for one problem of 2000 anchors x 20 NPs x 14 labels and 20 to 140 times slower for a
batch of 20, and it needs ``8 * B * I * W * K`` bytes: 448 MB for 100 such realisations). All arithmetic is float64: sums of many log-probabilities need the precision, and the
arrays besides the one-hot are small (``(B, I, K)`` posteriors, ``(B, W, K, K)`` confusion matrices). Very large
batches are solved in chunks (``max_chunk_answers``); chunks are independent problems, so chunking never changes
a result.

Table-level helpers: :func:`fit_labels` / :func:`infer_labels` (string labels in a DataFrame, the study's
post-processing), :func:`boundary_em` (whether a participant's click on an algorithmic boundary is correct),
:func:`majority_vote` (the baseline) and :func:`group_posteriors` (raw-class probabilities summed into main or
super classes).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..taxonomy import group_probabilities

__all__ = [
    "MISSING",
    "DEFAULT_MISSING",
    "PROB_PREFIX",
    "UNDETECTED",
    "UNLABELED",
    "EMResult",
    "LabelInference",
    "initial_confusion",
    "dawid_skene",
    "encode_labels",
    "fit_labels",
    "infer_labels",
    "boundary_em",
    "majority_vote",
    "group_posteriors",
]

#: Integer code of a missing answer in label arrays.
MISSING = -1
#: String answers that mean "this participant did not see the item" (besides NaN).
DEFAULT_MISSING: tuple[str, ...] = ("DidNotAnnotateFOV",)
#: Prefix of the probability columns of :func:`infer_labels`.
PROB_PREFIX = "EM_prob_"
#: The label for "I saw the FOV and chose not to annotate this nucleus" (a real label, not missing).
UNDETECTED = "undetected"
#: The label an item gets when the inferred class was given by no worker.
UNLABELED = "unlabeled"

_DEFAULT_MAX_CHUNK_ANSWERS = 4_000_000
# Stand-in for log(0) in the E-step. Any sum containing it is below -1e29, far below any genuine log-likelihood
# (at least W * log(smallest positive float64) > -1e9 for a million workers), and exp() of the difference to a
# possible class is exactly 0, so impossible classes get probability 0 without inf - inf arithmetic.
_IMPOSSIBLE = -1e30
# Relative probabilities below exp(-700) (about 1e-304) are set to exactly 0: the result is the same to float64
# precision, and numpy's exp is an order of magnitude slower on arguments that underflow.
_EXP_FLOOR = -700.0


# ------------------------------------------------------------------------------------------------ core


@dataclass(frozen=True)
class EMResult:
    """Output of :func:`dawid_skene`. Leading ``(B,)`` axes are present only for batched input.

    Attributes
    ----------
    posteriors : ([B,] I, K) float64 ndarray
        P(true class of item i = t | answers), from the last E-step. Rows sum to 1.
    confusion : ([B,] W, K, K) float64 ndarray
        ``confusion[..., w, t, l]`` = P(worker w answers l | true class t), indexed [true, given]; the M-step
        estimate from ``posteriors``. Rows sum to 1 (except rows of classes a problem never observes, with
        ``observed_classes_only``).
    priors : ([B,] K) float64 ndarray
        Class prior, the M-step estimate from ``posteriors`` (mean posterior over items).
    n_iter : int or (B,) int ndarray
        E-step/M-step iterations run (``n_iter`` unless ``tol`` stopped a problem earlier).
    converged : bool or (B,) bool ndarray
        Whether ``tol`` was met (always False without a tolerance).
    """

    posteriors: np.ndarray
    confusion: np.ndarray
    priors: np.ndarray
    n_iter: int | np.ndarray
    converged: bool | np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """([B,] I) int ndarray: the argmax class of each item (ties go to the lowest class index)."""
        return self.posteriors.argmax(axis=-1)


def initial_confusion(n_classes: int, q0: float = 0.7) -> np.ndarray:
    """The study's initial confusion matrix: ``q0`` on the diagonal, ``(1 - q0) / (K - 1)`` elsewhere.

    Returns
    -------
    (K, K) float64 ndarray
        Indexed [true, given]. For ``K == 1`` the single entry is 1.
    """
    if n_classes == 1:
        return np.ones((1, 1))
    cm = np.full((n_classes, n_classes), (1.0 - q0) / (n_classes - 1))
    np.fill_diagonal(cm, q0)
    return cm


def _observed_mask(labels: np.ndarray, k: int) -> np.ndarray:
    """(B, K) bool: which classes occur in each problem of labels (B, I, W)."""
    n_batch = labels.shape[0]
    offset = (np.arange(n_batch) * (k + 1))[:, None, None]
    counts = np.bincount((labels + 1 + offset).ravel(), minlength=n_batch * (k + 1))
    return counts.reshape(n_batch, k + 1)[:, 1:] > 0


def _check_labels(labels: np.ndarray, n_classes: int) -> None:
    bad = (labels < MISSING) | (labels >= n_classes)
    if bad.any():
        where = tuple(int(x) for x in np.argwhere(bad)[0])
        raise ValueError(
            f"labels must be integers in 0..{n_classes - 1} or {MISSING} (missing); found {int(bad.sum())} "
            f"out-of-range value(s), the first {int(labels[where])} at index {where}"
        )


def _one_hot(labels: np.ndarray, k: int) -> tuple[sp.csr_array, sp.csr_array]:
    """Sparse one-hot of a batch of answers, and its transpose.

    Parameters
    ----------
    labels : (B, I, W) int ndarray
        Codes 0..K-1, -1 = missing.

    Returns
    -------
    onehot : (B*I, B*W*K) CSR array
        Block-diagonal over problems: row ``b*I + i``, column ``(b*W + w)*K + l`` is 1 when worker w answered l
        on item i of problem b. Missing answers have no entry.
    onehot_t : (B*W*K, B*I) CSR array
        Its transpose, stored row-major for the M-step product.
    """
    n_batch, n_items, n_workers = labels.shape
    b, i, w = np.nonzero(labels >= 0)
    rows = b * n_items + i
    cols = (b * n_workers + w) * k + labels[b, i, w]
    data = np.ones(rows.size)
    shape = (n_batch * n_items, n_batch * n_workers * k)
    onehot = sp.csr_array((data, (rows, cols)), shape=shape)
    onehot_t = sp.csr_array((data, (cols, rows)), shape=shape[::-1])
    return onehot, onehot_t


# Internal layouts. Posteriors are class-major, (B, K, I): reductions over the K classes then run across long
# contiguous rows, which numpy does an order of magnitude faster than over a short last axis. Confusion matrices
# are kept transposed, (B, W, K_given, K_true), which is exactly the (row (b, w, l), column t) layout of the
# one-hot products, so neither step has to rearrange them; they are turned to [true, given] once at the end.


def _e_step(onehot: sp.csr_array, cm_t: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """Posteriors (B, K, I) from the one-hot answers (B*I, B*W*K), transposed confusion (B, W, K_given, K_true)
    and log prior (B, K)."""
    n_batch, n_workers, k, _ = cm_t.shape
    # log 0 becomes the finite sentinel _IMPOSSIBLE, so one product gives the log-likelihood of the possible
    # classes and a value <= _IMPOSSIBLE for the others
    with np.errstate(divide="ignore"):
        logcm = np.log(cm_t.reshape(n_batch * n_workers * k, k))
    np.maximum(logcm, _IMPOSSIBLE, out=logcm)
    ll = np.ascontiguousarray((onehot @ logcm).reshape(n_batch, -1, k).transpose(0, 2, 1))
    ll += log_prior[:, :, None]
    # log-sum-exp over classes; top is finite because the prior has a positive entry
    top = ll.max(axis=1, keepdims=True)
    possible = top > 0.5 * _IMPOSSIBLE
    ll -= top
    tiny = ll < _EXP_FLOOR
    np.maximum(ll, _EXP_FLOOR, out=ll)
    np.exp(ll, out=ll)
    np.copyto(ll, 0.0, where=tiny)
    ll /= ll.sum(axis=1, keepdims=True)  # >= 1: the top class contributes exp(0)
    if possible.all():
        return ll
    return np.where(possible, ll, 1.0 / k)


def _m_step(onehot_t: sp.csr_array, post: np.ndarray, init_cm_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transposed confusion (B, W, K_given, K_true) and prior (B, K) from the transposed one-hot (B*W*K, B*I),
    posteriors (B, K, I) and the transposed initial confusion (B, 1, K_given, K_true)."""
    n_batch, k, _ = post.shape
    # counts[b, w, l, t] = sum_i onehot[b, i, w, l] * P[b, t, i]; a true class t's mass is the sum over l
    counts = (onehot_t @ post.transpose(0, 2, 1).reshape(-1, k)).reshape(n_batch, -1, k, k)
    mass = counts.sum(axis=2, keepdims=True)
    has_mass = mass > 0.0
    if has_mass.all():
        counts /= mass
    else:  # rows (here columns) without mass restart from the initial pattern
        np.divide(counts, mass, out=counts, where=has_mass)
        np.copyto(counts, np.broadcast_to(init_cm_t, counts.shape), where=~has_mass)
    return counts, post.mean(axis=2)


def _solve_chunk(
    labels: np.ndarray, k: int, init_cm: np.ndarray, n_iter: int, tol: float | None, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EM on a batch (B, I, W) of problems with initial confusion (B, K, K) [true, given] and prior (B, K); see
    :func:`dawid_skene`. Returns posteriors (B, I, K) and confusion matrices (B, W, K_true, K_given)."""
    n_batch, n_items, n_workers = labels.shape
    init_cm_t = init_cm.transpose(0, 2, 1)[:, None]
    cm_t = np.broadcast_to(init_cm_t, (n_batch, n_workers, k, k)).copy()
    iters = np.zeros(n_batch, dtype=np.int64)
    converged = np.zeros(n_batch, dtype=bool)
    if n_items == 0:
        return np.zeros((n_batch, 0, k)), cm_t.transpose(0, 1, 3, 2).copy(), prior.copy(), iters, converged
    onehot, onehot_t = _one_hot(labels, k)
    pi = prior
    post = None
    active = np.ones(n_batch, dtype=bool)
    for _ in range(n_iter):
        with np.errstate(divide="ignore"):
            log_prior = np.log(pi)
        new_post = _e_step(onehot, cm_t, log_prior)
        new_cm_t, new_pi = _m_step(onehot_t, new_post, init_cm_t)
        if tol is None:
            post, cm_t, pi = new_post, new_cm_t, new_pi
            iters += 1
            continue
        if post is not None:
            delta = np.abs(new_post - post).max(axis=(1, 2))
            newly = active & (delta < tol)
        else:
            newly = np.zeros(n_batch, dtype=bool)
        # problems that converged earlier keep their state; the others take this iteration's
        keep = ~active
        post = new_post if post is None else np.where(keep[:, None, None], post, new_post)
        cm_t = np.where(keep[:, None, None, None], cm_t, new_cm_t)
        pi = np.where(keep[:, None], pi, new_pi)
        iters += active
        converged |= newly
        active &= ~newly
        if not active.any():
            break
    return (np.ascontiguousarray(post.transpose(0, 2, 1)), np.ascontiguousarray(cm_t.transpose(0, 1, 3, 2)), pi,
            iters, converged)


def dawid_skene(
    labels: np.ndarray,
    n_classes: int,
    *,
    q0: float = 0.7,
    n_iter: int = 70,
    tol: float | None = None,
    prior: np.ndarray | None = None,
    observed_classes_only: bool = False,
    max_chunk_answers: int = _DEFAULT_MAX_CHUNK_ANSWERS,
) -> EMResult:
    """Dawid-Skene EM with the NuCLS study's initialisation and schedule (notes section 2b).

    Parameters
    ----------
    labels : (I, W) or (B, I, W) int array
        Answer of worker w on item i (class index 0..K-1), or ``-1`` when missing. A 3-D array holds B
        independent problems of the same shape, solved together.
    n_classes : int
        K, the number of classes (classes need not all be observed).
    q0 : float
        Initial diagonal of every worker's confusion matrix, in (0, 1].
    n_iter : int
        Number of E-step/M-step iterations (at least 1).
    tol : float, optional
        Stop a problem once the largest absolute change of its posteriors between two E-steps is below
        ``tol``; that iteration is completed and counted. None (the study's setting) always runs ``n_iter``.
    prior : (K,) or (B, K) array, optional
        Initial class prior (normalised to sum 1); default uniform ``1/K``.
    observed_classes_only : bool
        Run each problem on the classes it actually observes, as the study does (its label set is the observed
        values): unobserved classes get prior and posterior 0, and the initial pattern uses ``K_obs`` (the
        number of observed classes) in ``(1 - q0) / (K_obs - 1)``. This makes a batched call equal to separate
        calls on re-coded labels even when realisations observe different classes (confusion rows and
        columns of unobserved classes then hold that pattern and carry no meaning). Default False: all K
        classes take part.
    max_chunk_answers : int
        Batches are solved in chunks of at most this many answer cells ``b * I * W`` (at least one problem per
        chunk), which bounds memory (building the sparse one-hot takes up to about 100 bytes per cell).
        Results do not depend on it.

    Returns
    -------
    EMResult
        Posteriors ``([B,] I, K)``, confusion matrices ``([B,] W, K, K)`` indexed [true, given], priors
        ``([B,] K)``, iterations run and convergence flags.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array.
    ValueError
        If a label is outside ``0..K-1`` and not ``-1``, or a parameter is out of range.

    Notes
    -----
    Each iteration is an E-step followed by an M-step, so the returned confusion matrices and priors are the
    estimates from the returned posteriors. Ties in :attr:`EMResult.labels` go to the lowest class index.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array (-1 = missing), got dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must have shape (I, W) or (B, I, W), got {labels.shape}")
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    k = int(n_classes)
    if not 0.0 < q0 <= 1.0:
        raise ValueError(f"q0 must be in (0, 1], got {q0}")
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    if tol is not None and not tol >= 0.0:
        raise ValueError(f"tol must be >= 0 or None, got {tol}")
    _check_labels(labels, k)
    batched = labels.ndim == 3
    lab3 = (labels if batched else labels[None]).astype(np.int64, copy=False)
    n_batch, n_items, n_workers = lab3.shape

    if prior is None:
        pi = np.full((n_batch, k), 1.0 / k)
    else:
        pi = np.asarray(prior, dtype=np.float64)
        if pi.shape not in ((k,), (n_batch, k)) or not np.all(np.isfinite(pi)) or np.any(pi < 0):
            raise ValueError(f"prior must be finite, non-negative, of shape ({k},) or ({n_batch}, {k})")
        total = pi.sum(axis=-1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError("prior must have a positive sum")
        pi = np.broadcast_to(pi / total, (n_batch, k)).copy()

    if n_batch == 0:
        return EMResult(np.zeros((0, n_items, k)), np.zeros((0, n_workers, k, k)), np.zeros((0, k)),
                        np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    if observed_classes_only:
        seen = _observed_mask(lab3, k)
        n_seen = seen.sum(axis=1)
        seen[n_seen == 0] = True  # nothing observed: keep every class
        pi = np.where(seen, pi, 0.0)
        total = pi.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError("prior is 0 on every observed class of a problem")
        pi /= total
        m = seen.sum(axis=1)[:, None, None]
        eye = np.eye(k, dtype=bool)
        init_cm = np.where(eye, np.where(m > 1, q0, 1.0), np.where(m > 1, (1.0 - q0) / np.maximum(m - 1, 1), 0.0))
    else:
        init_cm = np.broadcast_to(initial_confusion(k, q0), (n_batch, k, k))
    chunk = int(max(1, max_chunk_answers // max(n_items * n_workers, 1)))
    parts = [
        _solve_chunk(lab3[s:s + chunk], k, init_cm[s:s + chunk], int(n_iter), tol, pi[s:s + chunk])
        for s in range(0, n_batch, chunk)
    ]
    post, cm, pri, iters, conv = (np.concatenate(x) for x in zip(*parts, strict=True))
    if batched:
        return EMResult(post, cm, pri, iters, conv)
    return EMResult(post[0], cm[0], pri[0], int(iters[0]), bool(conv[0]))


# ------------------------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class LabelInference:
    """Output of :func:`fit_labels`.

    Attributes
    ----------
    table : DataFrame, one row per item
        The :func:`infer_labels` table.
    confusion : dict worker -> DataFrame (K_obs, K_obs)
        Each worker's confusion matrix, index ``true`` and columns ``given`` over :attr:`classes`.
    priors : Series (K_obs,)
        Class prior over :attr:`classes`.
    classes : list of str
        The classes EM ran on (the observed ones, in output order).
    result : EMResult or None
        The raw EM output (None when no answer at all was observed).
    """

    table: pd.DataFrame
    confusion: dict[Hashable, pd.DataFrame]
    priors: pd.Series
    classes: list[str]
    result: EMResult | None


def _missing_mask(frame: pd.DataFrame, missing: Sequence[str]) -> np.ndarray:
    return frame.isna().to_numpy() | frame.isin(list(missing)).to_numpy()


def encode_labels(
    frame: pd.DataFrame, classes: Sequence[str], missing: Sequence[str] = DEFAULT_MISSING
) -> np.ndarray:
    """String answers to the integer codes :func:`dawid_skene` takes.

    Parameters
    ----------
    frame : DataFrame (I items, W workers)
        Labels; NaN or a value in ``missing`` is a missing answer.
    classes : sequence of str, length K
        Class of each code.
    missing : sequence of str

    Returns
    -------
    (I, W) int64 ndarray
        Codes 0..K-1, ``-1`` for missing.

    Raises
    ------
    ValueError
        If a non-missing answer is not in ``classes`` (names the item and worker).
    """
    miss = _missing_mask(frame, missing)
    values = frame.to_numpy(dtype=object)
    lookup = {c: i for i, c in enumerate(classes)}
    if len(lookup) != len(classes):
        raise ValueError(f"classes must be unique, got {list(classes)}")
    codes = np.full(values.shape, MISSING, dtype=np.int64)
    rows, cols = np.nonzero(~miss)
    observed = values[rows, cols]
    mapped = pd.Series(observed, dtype=object).map(lookup)
    unknown = mapped.isna().to_numpy()
    if unknown.any():
        j = int(np.argmax(unknown))
        raise ValueError(
            f"label {observed[j]!r} (item {frame.index[rows[j]]!r}, worker {frame.columns[cols[j]]!r}) is not one "
            f"of the classes {list(classes)}; {int(unknown.sum())} answer(s) affected"
        )
    codes[rows, cols] = mapped.to_numpy(dtype=np.int64)
    return codes


def _observed_classes(frame: pd.DataFrame, missing: Sequence[str]) -> list:
    values = frame.to_numpy(dtype=object)[~_missing_mask(frame, missing)]
    return sorted(pd.unique(values), key=str)


def _answer_counts(codes: np.ndarray, k: int) -> np.ndarray:
    """(I, K) int: how many workers gave each class on each item."""
    return (codes[..., None] == np.arange(k)).sum(axis=1)


def fit_labels(
    frame: pd.DataFrame,
    *,
    classes: Sequence[str] | None = None,
    missing: Sequence[str] = DEFAULT_MISSING,
    q0: float = 0.7,
    n_iter: int = 70,
    tol: float | None = None,
    blank_undetected: bool = False,
) -> LabelInference:
    """Dawid-Skene truth inference on a table of string labels, with the study's post-processing.

    Parameters
    ----------
    frame : DataFrame (I items, W workers)
        Index = items (anchors), columns = workers, values = string labels. NaN or a value in ``missing`` is
        a missing answer; ``'undetected'`` is a real label.
    classes : sequence of str, optional
        Output classes, in column order; default the sorted observed labels. EM runs on the observed ones only
        (the study's label set); a class never observed gets probability 0.
    missing : sequence of str
        Answers that count as missing.
    q0, n_iter, tol
        See :func:`dawid_skene`.
    blank_undetected : bool
        Also blank (NaN label) items on which nobody gave an answer other than ``'undetected'``, as the
        reference does through ``n_matches < 1`` (an anchor no group member drew a box for). Default False:
        only items without any non-missing answer are blanked.

    Returns
    -------
    LabelInference
        ``table`` has, per item: ``EM_prob_<class>`` for each class; ``label`` (argmax, ties to the earlier
        class); ``confidence`` (its probability); ``label_count`` (workers who gave ``label``). When the argmax
        class was given by no worker, ``label`` becomes ``'unlabeled'`` with confidence P(unlabeled) (0 if
        ``'unlabeled'`` is not a class). Blanked items have NaN ``label`` and ``confidence`` and
        ``label_count`` 0 (their probabilities, equal to the prior, are kept). Also per-worker confusion matrices
        and the prior.

    Raises
    ------
    ValueError
        If an observed label is not in ``classes``.
    """
    observed = _observed_classes(frame, missing)
    if classes is None:
        out_classes = list(observed)
    else:
        out_classes = list(classes)
        if len(set(out_classes)) != len(out_classes):
            raise ValueError(f"classes must be unique, got {out_classes}")
        extra = [c for c in observed if c not in set(out_classes)]
        if extra:
            raise ValueError(f"observed labels {extra} are not in classes {out_classes}")
    em_classes = [c for c in out_classes if c in set(observed)]
    n_items = len(frame)
    k = len(em_classes)

    if k:
        codes = encode_labels(frame, em_classes, missing)
        result = dawid_skene(codes, k, q0=q0, n_iter=n_iter, tol=tol)
        post = result.posteriors
    else:
        codes = np.full(frame.shape, MISSING, dtype=np.int64)
        result = None
        post = np.zeros((n_items, 0))
    counts = _answer_counts(codes, k)
    probs = np.zeros((n_items, len(out_classes)))
    probs[:, [out_classes.index(c) for c in em_classes]] = post

    rows = np.arange(n_items)
    answered = (codes != MISSING).any(axis=1)
    if not k:
        label = np.full(n_items, np.nan, dtype=object)
        confidence = np.full(n_items, np.nan)
        label_count = np.zeros(n_items, dtype=np.int64)
    else:
        arg = post.argmax(axis=1)
        label = np.array(em_classes, dtype=object)[arg]
        confidence = post[rows, arg]
        label_count = counts[rows, arg]
        nobody = answered & (label_count == 0)
        if UNLABELED in em_classes:
            u = em_classes.index(UNLABELED)
            confidence = np.where(nobody, post[:, u], confidence)
            label_count = np.where(nobody, counts[:, u], label_count)
        else:
            confidence = np.where(nobody, 0.0, confidence)
        label[nobody] = UNLABELED
    blank = ~answered
    if blank_undetected and UNDETECTED in em_classes:
        blank |= ~((codes != MISSING) & (codes != em_classes.index(UNDETECTED))).any(axis=1)
    label[blank] = np.nan
    confidence = np.where(blank, np.nan, confidence)
    label_count = np.where(blank, 0, label_count)

    table = pd.DataFrame(probs, index=frame.index, columns=[f"{PROB_PREFIX}{c}" for c in out_classes])
    table["label"] = pd.Series(label, index=frame.index, dtype=object)
    table["confidence"] = confidence
    table["label_count"] = np.asarray(label_count, dtype=np.int64)

    true_idx = pd.Index(em_classes, name="true")
    given_idx = pd.Index(em_classes, name="given")
    if result is not None:
        confusion = {w: pd.DataFrame(result.confusion[j], index=true_idx, columns=given_idx)
                     for j, w in enumerate(frame.columns)}
        priors = pd.Series(result.priors, index=pd.Index(em_classes, name="class"), name="prior")
    else:
        confusion = {w: pd.DataFrame(np.zeros((0, 0)), index=true_idx, columns=given_idx) for w in frame.columns}
        priors = pd.Series(np.zeros(0), index=pd.Index([], name="class", dtype=object), name="prior")
    return LabelInference(table=table, confusion=confusion, priors=priors, classes=em_classes, result=result)


def infer_labels(frame: pd.DataFrame, **options) -> pd.DataFrame:
    """The label table of :func:`fit_labels` (use that for the confusion matrices); ``options`` are its keyword
    arguments (``classes``, ``missing``, ``q0``, ``n_iter``, ``tol``, ``blank_undetected``).

    Returns
    -------
    DataFrame (I items)
        ``EM_prob_<class>`` columns, ``label``, ``confidence``, ``label_count``.
    """
    return fit_labels(frame, **options).table


def boundary_em(
    clicked: pd.DataFrame,
    detected_mask: pd.DataFrame,
    *,
    q0: float = 0.7,
    n_iter: int = 70,
    tol: float | None = None,
) -> pd.DataFrame:
    """The study's binary EM run on algorithmic-boundary clicks ("is the suggested boundary correct?").

    A participant's answer on an item is 1 if they clicked the suggested boundary, 0 if not, and missing where
    they did not detect the item (their label was ``undetected`` or ``DidNotAnnotateFOV``); a click on an item
    the participant did not detect is ignored.

    Parameters
    ----------
    clicked, detected_mask : bool DataFrame (I items, W participants)
        Same index and columns.
    q0, n_iter, tol
        See :func:`dawid_skene` (K = 2).

    Returns
    -------
    DataFrame (I items)
        ``decision`` (nullable boolean: argmax, ties to False; NA where nobody detected the item),
        ``probability`` (P(boundary correct)), ``n_detected`` and ``n_clicked`` (participants).
    """
    if not (clicked.index.equals(detected_mask.index) and clicked.columns.equals(detected_mask.columns)):
        raise ValueError("clicked and detected_mask must have the same index and columns")
    for name, f in (("clicked", clicked), ("detected_mask", detected_mask)):
        if not all(pd.api.types.is_bool_dtype(dt) for dt in f.dtypes):
            raise ValueError(f"{name} must have only bool columns, got {sorted({str(d) for d in f.dtypes})}")
    det = detected_mask.to_numpy(dtype=bool)
    clk = clicked.to_numpy(dtype=bool) & det
    codes = np.where(det, clk.astype(np.int64), MISSING)
    res = dawid_skene(codes, 2, q0=q0, n_iter=n_iter, tol=tol)
    prob = res.posteriors[:, 1]
    decision = pd.array(prob > res.posteriors[:, 0], dtype="boolean")
    answered = det.any(axis=1)
    decision[~answered] = pd.NA
    return pd.DataFrame({"decision": decision, "probability": prob, "n_detected": det.sum(axis=1),
                         "n_clicked": clk.sum(axis=1)}, index=clicked.index)


def majority_vote(
    frame: pd.DataFrame, *, classes: Sequence[str] | None = None, missing: Sequence[str] = DEFAULT_MISSING
) -> pd.DataFrame:
    """The most frequent answer per item (the baseline EM is compared with).

    Parameters
    ----------
    frame : DataFrame (I items, W workers)
        As for :func:`infer_labels`.
    classes : sequence of str, optional
        Tie-break order; default the sorted observed labels.
    missing : sequence of str

    Returns
    -------
    DataFrame (I items)
        ``label``: the most frequent non-missing answer; a tie goes to the class that comes first in
        ``classes`` (alphabetical by default). NaN for items without answers. ``count``: how many workers gave it.
    """
    observed = _observed_classes(frame, missing)
    order = list(observed) if classes is None else list(classes)
    codes = encode_labels(frame, order, missing)
    counts = _answer_counts(codes, len(order))
    n_items = len(frame)
    if not order:
        return pd.DataFrame({"label": pd.Series([np.nan] * n_items, index=frame.index, dtype=object),
                             "count": np.zeros(n_items, dtype=np.int64)}, index=frame.index)
    arg = counts.argmax(axis=1)
    best = counts[np.arange(n_items), arg]
    label = np.array(order, dtype=object)[arg]
    label[best == 0] = np.nan
    return pd.DataFrame({"label": label, "count": best.astype(np.int64)}, index=frame.index)


def group_posteriors(prob_frame: pd.DataFrame, level: str, *, prefix: str = PROB_PREFIX) -> pd.DataFrame:
    """Sum raw-class probabilities into main or super classes and take the argmax again (notes 2b).

    Parameters
    ----------
    prob_frame : DataFrame (I items)
        Columns ``<prefix><class>`` over raw classes (extra labels such as ``undetected`` stay groups of their
        own); other columns are ignored, except that rows whose ``label`` column is NaN (blanked items) keep a
        NaN label. With ``prefix=''`` every column but ``label``, ``confidence`` and ``label_count`` is a class.
    level : {'main', 'super'}

    Returns
    -------
    DataFrame (I items)
        ``<prefix><group>`` for each group present (taxonomy order, then extra labels), ``label`` (argmax,
        ties to the earlier group; NaN for blanked rows or rows with NaN probabilities) and ``confidence``.
    """
    cols = [c for c in prob_frame.columns if isinstance(c, str) and c.startswith(prefix)
            and c not in ("label", "confidence", "label_count")]
    if not cols:
        raise ValueError(f"no probability columns starting with {prefix!r} in {list(prob_frame.columns)}")
    names = [c[len(prefix):] for c in cols]
    grouped, groups = group_probabilities(prob_frame[cols].to_numpy(dtype=np.float64), names, level)
    out = pd.DataFrame(grouped, index=prob_frame.index, columns=[f"{prefix}{g}" for g in groups])
    invalid = np.isnan(grouped).any(axis=1)
    if "label" in prob_frame.columns:
        invalid |= prob_frame["label"].isna().to_numpy()
    arg = np.where(invalid, 0, np.nan_to_num(grouped, nan=-1.0).argmax(axis=1))
    label = np.array(groups, dtype=object)[arg]
    label[invalid] = np.nan
    out["label"] = pd.Series(label, index=prob_frame.index, dtype=object)
    out["confidence"] = np.where(invalid, np.nan, grouped[np.arange(len(out)), arg])
    return out
