"""How far the synthetic cohort is from real H&E: a realism report measured with the study's own instruments.

Every comparison treats the two sides the same way, so that what differs is the data and not the procedure:

* **Nucleus masks.** Real annotations are mostly boxes (two thirds of the core set) and synthetic ones are traced
  outlines, so annotation masks would let a test tell the sides apart by annotation type alone. Each annotated
  nucleus of either side is therefore segmented the same way (:func:`nucleus_label_image`): HistomicsTK hematoxylin
  (:func:`nucls_utils.dtale.hematoxylin_channel`) inside its box, Otsu's threshold, the connected component nearest
  the box centre, holes filled.
* **Class mix.** The real sample (17 FOVs) and a synthetic cohort hold the classes in other proportions; nuclei are
  drawn from the synthetic side class by class in the real side's proportions (:func:`class_matched_sample`), so a
  test measures how nuclei of a class look, not how often a class occurs.
* **Splits by FOV.** Every cross-validated test splits FOVs, never nuclei of one FOV, between training and testing.

The report (:func:`realism_report`) holds

1. a classifier two-sample test (C2ST, :func:`c2st_auroc`) on the 62 Table S8 HistomicsTK features, all of them and
   per group (size, shape, intensity, gradient, texture): the held-out AUROC (:func:`fold_auroc`) of a
   gradient-boosting classifier told to separate real from synthetic nuclei (0.5: indistinguishable, 1.0: always
   told apart);
2. a second C2ST on 64 px nucleus-centred RGB patches with a small CNN (:func:`patch_c2st_auroc`), which matched
   summary statistics cannot fool, averaged over several trainings (:func:`repeated_patch_c2st`; epochs and
   trainings per profile: ``patch_epochs``, ``patch_repeats`` of :class:`nucls_utils.profiles.StudySettings`);
3. per-class standardised mean differences of key features (:func:`smd_table`);
4. the heuristic bootstrap's detection precision / recall / F1 at IOU >= 0.5 on each side, run the same way on
   both (one region per FOV: the real sample has no region maps);
5. image-level statistics per FOV (:func:`image_statistics`): stain densities, focus (variance of the Laplacian),
   background and eosin-stained (cytoplasm and matrix) fractions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..io.dataset import FovRecord

__all__ = ["SMD_FEATURES", "SMD_CLASSES", "C2ST_GROUPS", "RealismReport", "nucleus_label_image",
           "nucleus_table", "class_matched_sample", "matched_pairs", "n_folds", "fold_auroc", "c2st_auroc",
           "nucleus_patches", "patch_cnn", "patch_c2st_auroc", "repeated_patch_c2st",
           "smd_table", "bootstrap_detection", "image_statistics", "realism_report", "report_tables", "TARGETS",
           "GOALS"]

#: Features of the standardised-mean-difference table (HistomicsTK names) and their short labels.
SMD_FEATURES: dict[str, str] = {
    "Size.Area": "area",
    "Shape.Circularity": "circularity",
    "Shape.Eccentricity": "eccentricity",
    "Nucleus.Intensity.Mean": "intensity mean",
    "Nucleus.Intensity.Std": "intensity SD",
    "Nucleus.Haralick.Contrast.Mean": "Haralick contrast",
    "Nucleus.Haralick.Entropy.Mean": "Haralick entropy",
}
#: Classes of the standardised-mean-difference table.
SMD_CLASSES: tuple[str, ...] = ("tumor", "fibroblast", "lymphocyte", "plasma_cell")
#: Feature groups of the C2ST: Table S8 groups, with the six Fourier shape descriptors under shape.
C2ST_GROUPS: dict[str, tuple[str, ...]] = {"size": ("Size",), "shape": ("Shape", "FSD"), "intensity": ("Intensity",),
                                           "gradient": ("Edges",), "texture": ("Haralick",)}
#: Classes with at least this many real nuclei take part in the two-sample tests.
MIN_REAL_PER_CLASS = 10


# ------------------------------------------------------------------------------------------------------------
# Nuclei: masks and features
# ------------------------------------------------------------------------------------------------------------
def _box_mask(htx: np.ndarray) -> np.ndarray:
    """Nucleus mask inside one (padded) box of hematoxylin: Otsu, component nearest the centre, holes filled."""
    from skimage.filters import threshold_otsu

    if htx.size < 9 or htx.min() == htx.max():
        return np.zeros(htx.shape, bool)
    fg = htx > threshold_otsu(htx)
    lab, n = ndi.label(fg)
    if n == 0:
        return fg
    h, w = htx.shape
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    d_min = ndi.minimum(d, lab, index=np.arange(1, n + 1))
    keep = int(np.argmin(d_min)) + 1
    return ndi.binary_fill_holes(lab == keep)


def nucleus_label_image(record: FovRecord, htx: np.ndarray, pad: int = 2) -> np.ndarray:
    """Label image ``(H, W) int32`` of a FOV's annotated nuclei (label ``i + 1`` = ``record.nuclei[i]``), each
    segmented inside its box (padded by ``pad`` px) by :func:`_box_mask`; where nuclei overlap, the later wins."""
    h, w = htx.shape
    out = np.zeros((h, w), np.int32)
    for i, n in enumerate(record.nuclei):
        x0, y0 = max(n.xmin - pad, 0), max(n.ymin - pad, 0)
        x1, y1 = min(n.xmax + pad, w), min(n.ymax + pad, h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        m = _box_mask(htx[y0:y1, x0:x1])
        out[y0:y1, x0:x1][m] = i + 1
    return out


def nucleus_table(records: Sequence[FovRecord], *, progress: bool = False, desc: str = "nucleus features"
                  ) -> pd.DataFrame:
    """One row per annotated nucleus: ``fovname``, ``hospital``, ``nucleus_index``, ``raw_class``, box centre
    ``cx``, ``cy`` (px), ``n_pixels`` and the 62 Table S8 features (NaN where the mask is under 16 px)."""
    from ..dtale import hematoxylin_channel, nuclei_features
    from ..progress import tqdm

    frames = []
    for r in tqdm(records, desc=desc, disable=not progress):
        if not r.nuclei:
            continue
        htx = hematoxylin_channel(r.read_rgb())
        lab = nucleus_label_image(r, htx)
        feats = nuclei_features(lab, htx, labels=range(1, len(r.nuclei) + 1)).reset_index(drop=True)
        meta = pd.DataFrame({"fovname": r.name, "hospital": r.hospital, "nucleus_index": np.arange(len(r.nuclei)),
                             "raw_class": [n.raw_class for n in r.nuclei],
                             "cx": [(n.xmin + n.xmax) / 2 for n in r.nuclei],
                             "cy": [(n.ymin + n.ymax) / 2 for n in r.nuclei]})
        frames.append(pd.concat([meta, feats], axis=1))
    if not frames:
        raise ValueError(f"{desc}: none of the {len(records)} FOVs has an annotated nucleus")
    return pd.concat(frames, ignore_index=True)


def class_matched_sample(synthetic_classes: Sequence[str], real_classes: Sequence[str], rng: np.random.Generator,
                         *, ratio: float = 2.0, min_real: int = MIN_REAL_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of a class-matched pair of samples.

    Classes with at least ``min_real`` real nuclei and at least one synthetic nucleus are kept; every real nucleus of
    those classes is taken, and synthetic nuclei are drawn without replacement, class by class, in the real side's
    proportions, ``ratio`` times as many as the real ones (fewer when a class runs short: the same scale for every
    class, so proportions hold).

    Returns
    -------
    synthetic_rows, real_rows : int ndarrays
    """
    syn = pd.Series(np.asarray(synthetic_classes, dtype=object))
    real = pd.Series(np.asarray(real_classes, dtype=object))
    n_real = real.value_counts()
    n_syn = syn.value_counts()
    classes = sorted(c for c in n_real.index if n_real[c] >= min_real and n_syn.get(c, 0) > 0)
    if not classes:
        raise ValueError("no class has enough nuclei on both sides for a class-matched comparison")
    scale = min([ratio] + [n_syn[c] / n_real[c] for c in classes])
    syn_rows, real_rows = [], []
    for c in classes:
        real_rows.append(np.flatnonzero(real.to_numpy() == c))
        pool = np.flatnonzero(syn.to_numpy() == c)
        k = max(1, int(np.floor(scale * n_real[c])))
        syn_rows.append(np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False)))
    return np.concatenate(syn_rows), np.concatenate(real_rows)


# ------------------------------------------------------------------------------------------------------------
# Two-sample tests
# ------------------------------------------------------------------------------------------------------------
@contextmanager
def _threads(n: int = 1):
    """Run model fits on ``n`` threads (OpenMP/BLAS and torch), restoring the settings after. The tests' fits run on
    one: they are small, on a shared 2-core machine one thread was 3-7x faster than two (measured for both models),
    and results do not depend on the machine's core count. The refiner (:mod:`.refiner`) uses it too."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)




def n_folds(y: np.ndarray, groups: Sequence, n_splits: int = 5) -> int:
    """Folds a two-sample test runs with: ``n_splits``, or fewer when a side has fewer FOVs (``groups``) than
    that; under 2 the test cannot be run."""
    y, groups = np.asarray(y), np.asarray(groups)
    return int(min(n_splits, len(np.unique(groups[y == 1])), len(np.unique(groups[y == 0]))))


def _folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = n_folds(y, groups, n_splits)
    if n_splits < 2:
        raise ValueError("a two-sample test needs at least two FOVs on each side "
                         f"(has {len(np.unique(groups[y == 0]))} with y == 0, {len(np.unique(groups[y == 1]))} "
                         "with y == 1)")
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(y, y, groups)


def fold_auroc(y: np.ndarray, score: np.ndarray, folds: Sequence[np.ndarray]) -> float:
    """The held-out AUROC of a cross-validated test: the mean over folds of the AUROC of each fold's scores on its
    own test rows (``folds``: the test rows of each fold; a fold with one class only is left out).

    Each fold has its own model, and the scores of two models need not be on one scale: a CNN whose logits drift
    from fold to fold separates every fold perfectly and still loses AUROC when all out-of-fold scores are ranked
    together (a generator-2.4 candidate, one patch-CNN training: 0.864 pooled, 0.998 as the mean of its five
    folds). The mean over folds measures only what each model tells apart.
    """
    from ..evaluation import roc_auc

    y, score = np.asarray(y, dtype=int), np.asarray(score, dtype=float)
    per = [roc_auc(y[t], score[t]) for t in folds if len(np.unique(y[t])) == 2]
    if not per:
        raise ValueError("no fold holds both classes")
    return float(np.mean(per))


def c2st_auroc(X: np.ndarray, y: np.ndarray, groups: Sequence, *, n_splits: int = 5, seed: int = 0) -> float:
    """Classifier two-sample test: held-out AUROC of a gradient-boosting classifier separating ``y == 1`` from
    ``y == 0`` rows of ``X`` (NaN allowed), with FOV-grouped stratified folds (``groups``: one label per row).

    Classes are weighted to balance; the AUROC is the mean of the folds' held-out AUROCs (:func:`fold_auroc`).
    0.5 means the two samples cannot be told apart by this classifier.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=int)
    groups = np.asarray(groups)
    score = np.full(len(y), np.nan)
    tests = []
    with _threads(1):
        for train, test in _folds(y, groups, n_splits, seed):
            clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.08, max_leaf_nodes=15,
                                                 class_weight="balanced", random_state=seed)
            clf.fit(X[train], y[train])
            score[test] = clf.predict_proba(X[test])[:, 1]
            tests.append(test)
    return fold_auroc(y, score, tests)


def nucleus_patches(records: Sequence[FovRecord], table: pd.DataFrame, size: int = 64) -> np.ndarray:
    """RGB patches ``(N, size, size, 3) uint8`` centred on the box centres of ``table``'s rows (reflect-padded at
    the image border), in the table's row order."""
    by_fov: dict[str, list[int]] = {}
    for pos, name in enumerate(table["fovname"]):
        by_fov.setdefault(name, []).append(pos)
    out = np.zeros((len(table), size, size, 3), np.uint8)
    half = size // 2
    cx = table["cx"].to_numpy()
    cy = table["cy"].to_numpy()
    for r in records:
        rows = by_fov.get(r.name)
        if not rows:
            continue
        rgb = np.pad(r.read_rgb(), ((half, half), (half, half), (0, 0)), mode="reflect")
        for pos in rows:
            x, y = int(round(cx[pos])), int(round(cy[pos]))
            out[pos] = rgb[y:y + size, x:x + size]
    return out


def patch_cnn():
    """The patch test's CNN (also the refiner's discriminator, :mod:`.refiner`): four conv-BN-ReLU-max-pool blocks
    (16, 32, 64, 64 channels), global average pooling and one logit."""
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), *block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1))


def patch_c2st_auroc(patches: np.ndarray, y: np.ndarray, groups: Sequence, *, n_splits: int = 5, seed: int = 0,
                     epochs: int = 12, batch_size: int = 64) -> float:
    """Classifier two-sample test on image patches: held-out AUROC (:func:`fold_auroc`) of a small CNN (four
    conv-BN-ReLU-pool blocks, global average pooling, a linear output) trained with Adam on ``y`` (1 vs 0), random
    flips and quarter turns, positive class weighted to balance; FOV-grouped stratified folds. Seeded under a forked
    torch RNG."""
    import torch

    y = np.asarray(y, dtype=int)
    x_all = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)
    score = np.full(len(y), np.nan)
    rng = np.random.default_rng(seed)
    tests = []
    with _threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for train, test in _folds(y, np.asarray(groups), n_splits, seed):
            model = patch_cnn()
            opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
            pos = max(int(y[train].sum()), 1)
            loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(train) - pos) / pos))
            yt = torch.from_numpy(y.astype(np.float32))
            for _ in range(epochs):
                model.train()
                order = rng.permutation(train)
                for b in range(0, len(order), batch_size):
                    idx = order[b:b + batch_size]
                    if len(idx) < 2:
                        continue
                    xb = x_all[idx]
                    if rng.random() < 0.5:
                        xb = xb.flip(3)
                    xb = torch.rot90(xb, int(rng.integers(4)), dims=(2, 3))
                    opt.zero_grad()
                    loss = loss_fn(model(xb).squeeze(1), yt[idx])
                    loss.backward()
                    opt.step()
            model.eval()
            with torch.no_grad():
                score[test] = torch.cat([model(x_all[test[b:b + 256]]).squeeze(1)
                                         for b in range(0, len(test), 256)]).numpy()
            tests.append(test)
    return fold_auroc(y, score, tests)


def repeated_patch_c2st(patches: np.ndarray, y: np.ndarray, groups: Sequence, *, seed: int = 0, repeats: int = 3,
                        n_jobs: int | None = None, **kw) -> tuple[float, list[float]]:
    """:func:`patch_c2st_auroc` trained ``repeats`` times (seeds ``seed, seed + 1, ...``: other folds, initial weights
    and batches): ``(mean AUROC, the AUROC of each training)``.

    The trainings run side by side in ``n_jobs`` processes (default: one per training, at most one per core), each
    on one thread as always, so each result is the one a lone training gives; on two cores two trainings take the
    wall time of one.
    """
    import os

    from joblib import Parallel, delayed

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    # n_jobs=1 runs in this process, in sequence
    runs = Parallel(n_jobs=n_jobs or min(repeats, os.cpu_count() or 1))(
        delayed(patch_c2st_auroc)(patches, y, groups, seed=seed + r, **kw) for r in range(repeats))
    return float(np.mean(runs)), [float(v) for v in runs]


# ------------------------------------------------------------------------------------------------------------
# Feature differences, the heuristic, image statistics
# ------------------------------------------------------------------------------------------------------------
def smd_table(synthetic: pd.DataFrame, real: pd.DataFrame, *, classes: Sequence[str] = SMD_CLASSES,
              features: dict[str, str] = SMD_FEATURES) -> pd.DataFrame:
    """Per (class, feature): means, SDs and the standardised mean difference ``(mean_syn - mean_real) /
    pooled SD`` of two :func:`nucleus_table` frames (NaN rows dropped per feature)."""
    rows = []
    for c in classes:
        s, r = synthetic[synthetic["raw_class"] == c], real[real["raw_class"] == c]
        for f, label in features.items():
            a, b = s[f].dropna().to_numpy(), r[f].dropna().to_numpy()
            if len(a) < 2 or len(b) < 2:
                smd = np.nan
            else:
                pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
                smd = (a.mean() - b.mean()) / pooled if pooled > 0 else np.nan
            rows.append({"class": c, "feature": label, "n_synthetic": len(a), "n_real": len(b),
                         "mean_synthetic": a.mean() if len(a) else np.nan, "mean_real": b.mean() if len(b) else np.nan,
                         "sd_synthetic": a.std(ddof=1) if len(a) > 1 else np.nan,
                         "sd_real": b.std(ddof=1) if len(b) > 1 else np.nan, "smd": smd})
    return pd.DataFrame(rows)


def bootstrap_detection(records: Sequence[FovRecord], *, progress: bool = False, desc: str = "bootstrap"
                        ) -> dict[str, float]:
    """Detection precision, recall and F1 (percent, IOU >= 0.5) of the heuristic bootstrap, run with one region per
    FOV (no region map), against the annotated boxes; ``N`` is the number of annotated nuclei."""
    from ..evaluation import DetectionCounts, detection_counts
    from ..progress import tqdm
    from ..suggestions.heuristic import bootstrap_suggestions

    total = DetectionCounts(0, 0, 0)
    for r in tqdm(records, desc=desc, disable=not progress):
        pred = bootstrap_suggestions(r.read_rgb())
        t = np.array([n.box for n in r.nuclei], float).reshape(-1, 4)
        p = np.array([n.box for n in pred], float).reshape(-1, 4)
        total = total + detection_counts(t, p)
    return {"N": total.tp + total.fn, "precision": 100 * total.precision, "recall": 100 * total.recall,
            "F1": 100 * total.f1}


def image_statistics(records: Sequence[FovRecord]) -> pd.DataFrame:
    """Per FOV: stain densities (:func:`nucls_utils.stains.stain_densities`), ``focus`` (variance of the Laplacian
    of the grey image, 0-255 scale), ``background_fraction`` (pixels brighter than 215 in every channel: glass,
    lumens, clefts), ``nuclear_fraction`` (pixels of hematoxylin optical density above 0.45) and
    ``eosin_fraction`` (the other stained pixels: cytoplasm and matrix)."""
    from ..stains import stain_densities, stain_matrix

    unmix = np.linalg.pinv(stain_matrix()[:, :2])  # (2, 3): optical density -> hematoxylin, eosin
    rows = []
    for r in records:
        rgb = r.read_rgb()
        grey = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
        od = -np.log10(np.clip(rgb.astype(float), 1, 255) / 255.0)
        conc = od.reshape(-1, 3) @ unmix.T
        background = (rgb > 215).all(axis=2).ravel()
        nuclear = (conc[:, 0] > 0.45) & ~background
        rows.append({"fovname": r.name, "hospital": r.hospital, **stain_densities(rgb),
                     "focus": float(ndi.laplace(grey).var()), "background_fraction": float(background.mean()),
                     "nuclear_fraction": float(nuclear.mean()),
                     "eosin_fraction": float((~background & ~nuclear).mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------------------
@dataclass
class RealismReport:
    """The realism report of a synthetic cohort against a real sample (see the module docstring).

    Attributes
    ----------
    summary : DataFrame
        One row per headline quantity (``quantity``, ``value``, ``target``, ``goal``, ``meets``, ``note``); a quantity that
        could not be measured (NaN) does not meet its target.
    c2st : DataFrame
        Feature C2ST AUROC for all features and per group, and the patch C2ST, with sample sizes.
    smd : DataFrame
        :func:`smd_table`.
    bootstrap : DataFrame
        :func:`bootstrap_detection` for each side.
    images : DataFrame
        :func:`image_statistics` of both sides, with a ``dataset`` column.
    nuclei : DataFrame
        :func:`nucleus_table` of both sides, with a ``dataset`` column.
    """

    summary: pd.DataFrame
    c2st: pd.DataFrame
    smd: pd.DataFrame
    bootstrap: pd.DataFrame
    images: pd.DataFrame
    nuclei: pd.DataFrame = field(repr=False)

    @property
    def values(self) -> dict[str, float]:
        return dict(zip(self.summary["quantity"], self.summary["value"], strict=True))

    def describe_targets(self) -> str:
        """One line per summary quantity, ``MET`` or ``NOT MET``, with value, target and note; then a total line
        naming every miss (a quantity not measured counts as a miss)."""
        lines, missed = [], []
        for row in self.summary.itertuples(index=False):
            op = ">=" if row.quantity == "smd_within_0.5_share" else "<="
            note = getattr(row, "note", "")
            goal = getattr(row, "goal", np.nan)
            goal = f", goal {goal:g}" if np.isfinite(goal) else ""
            lines.append(f"{'MET    ' if row.meets else 'NOT MET'}  {row.quantity} = {row.value:.3g} "
                         f"(target {op} {row.target:g}{goal})" + (f"; {note}" if note else ""))
            if not row.meets:
                missed.append(row.quantity)
        lines.append(f"targets met: {len(self.summary) - len(missed)} of {len(self.summary)}"
                     + (f"; not met: {', '.join(missed)}" if missed else ""))
        return "\n".join(lines)


def report_tables(report: RealismReport) -> dict[str, tuple[pd.DataFrame, str]]:
    """The realism report's tables as notebook 01 saves them (``nb01_realism_<key>``): each a frame and its
    caption; the image statistics as medians per dataset."""
    medians = report.images.groupby("dataset", sort=False).median(numeric_only=True).reset_index()
    return {
        "summary": (report.summary, "Realism of the synthetic cohort against the real sample: headline quantities vs "
                                    "the issue-14 targets."),
        "c2st": (report.c2st, "Classifier two-sample tests: held-out AUROC (mean over the folds), real vs synthetic "
                              "(0.5: indistinguishable)."),
        "smd": (report.smd, "Per-class standardised mean differences (synthetic - real) / pooled SD."),
        "bootstrap": (report.bootstrap, "Heuristic bootstrap detection (IOU >= 0.5, one region per FOV) on each "
                                        "side."),
        "images": (medians, "Image statistics per FOV: medians per dataset."),
    }


#: The issue-14 targets: feature C2ST AUROC, patch C2ST AUROC, share of |SMD| <= 0.5, bootstrap F1 gap (points).
TARGETS = {"feature_c2st_auroc": 0.75, "patch_c2st_auroc": 0.90, "smd_within_0.5_share": 0.80,
           "bootstrap_f1_gap": 5.0}
#: The issue-14 goals beyond the targets (C2ST AUROC only).
GOALS = {"feature_c2st_auroc": 0.60, "patch_c2st_auroc": 0.75}


def realism_report(synthetic: Sequence[FovRecord], real: Sequence[FovRecord], *, seed: int = 0,
                   patch_epochs: int = 12, patch_repeats: int = 3, progress: bool = True) -> RealismReport:
    """Measure ``synthetic`` against ``real`` (see the module docstring); deterministic for a seed.

    The two-sample tests run with 5 FOV-grouped folds, or fewer when a side has fewer FOVs (column ``folds`` of
    ``c2st``); with under two FOVs on a side they are not run: AUROC NaN, the reason in ``note``, and the summary
    row counts as not met. The patch C2ST is the mean of ``patch_repeats`` trainings of the CNN
    (:func:`repeated_patch_c2st`; ``c2st`` keeps their range in ``auroc_min`` / ``auroc_max`` and their number in
    ``runs``). Third-party warnings (HistomicsTK, scikit-learn, torch) are not passed on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage/HistomicsTK deprecations, NaN moments of flat nuclei, torch notices
        return _realism_report(synthetic, real, seed=seed, patch_epochs=patch_epochs, patch_repeats=patch_repeats,
                               progress=progress)


def matched_pairs(synthetic: pd.DataFrame, real: pd.DataFrame, *, seed: int = 0):
    """The class-matched two-sample set of two :func:`nucleus_table` frames (:func:`class_matched_sample`).

    Returns ``(both, y, groups, synthetic_rows, real_rows)``: the synthetic then the real rows with a ``dataset``
    column, ``y`` (1 = real), the FOV of each row, and the positions taken from each frame.
    """
    s_rows, r_rows = class_matched_sample(synthetic["raw_class"], real["raw_class"], np.random.default_rng(seed))
    both = pd.concat([synthetic.iloc[s_rows].assign(dataset="synthetic"), real.iloc[r_rows].assign(dataset="real")],
                     ignore_index=True)
    return both, (both["dataset"] == "real").to_numpy().astype(int), both["fovname"].to_numpy(), s_rows, r_rows


def _realism_report(synthetic: Sequence[FovRecord], real: Sequence[FovRecord], *, seed: int, patch_epochs: int,
                    patch_repeats: int, progress: bool) -> RealismReport:
    from ..dtale import FEATURE_GROUPS, TABLE_S8_FEATURES

    syn_tab = nucleus_table(synthetic, progress=progress, desc="features (synthetic)")
    real_tab = nucleus_table(real, progress=progress, desc="features (real)")
    both, y, groups, s_rows, r_rows = matched_pairs(syn_tab, real_tab, seed=seed)
    k = n_folds(y, groups)
    note = "" if k >= 2 else (f"not run: {len(set(groups[y == 0]))} synthetic and {len(set(groups[y == 1]))} real "
                              "FOVs in the class-matched sample; a FOV-grouped test needs at least 2 on each side")

    def feature_test(cols: list[str]) -> float:
        return c2st_auroc(both[cols].to_numpy(), y, groups, seed=seed) if k >= 2 else float("nan")

    rows = [{"test": "features: all", "auroc": feature_test(list(TABLE_S8_FEATURES))}]
    for g, parts in C2ST_GROUPS.items():
        rows.append({"test": f"features: {g}", "auroc": feature_test([f for p in parts for f in FEATURE_GROUPS[p]])})
    for row in rows:
        row.update(auroc_min=row["auroc"], auroc_max=row["auroc"], runs=1)
    patch_auroc, patch_runs = float("nan"), []
    if k >= 2:
        patches = np.concatenate([nucleus_patches(synthetic, syn_tab.iloc[s_rows]),
                                  nucleus_patches(real, real_tab.iloc[r_rows])])
        patch_auroc, patch_runs = repeated_patch_c2st(patches, y, groups, seed=seed, repeats=patch_repeats,
                                                      epochs=patch_epochs)
    rows.append({"test": "patches: 64 px CNN", "auroc": patch_auroc, "auroc_min": min(patch_runs, default=np.nan),
                 "auroc_max": max(patch_runs, default=np.nan), "runs": len(patch_runs)})
    c2st = pd.DataFrame(rows).assign(n_synthetic=int((y == 0).sum()), n_real=int(y.sum()),
                                     fovs_synthetic=len(set(groups[y == 0])), fovs_real=len(set(groups[y == 1])),
                                     folds=k, note=note)
    smd = smd_table(syn_tab, real_tab)
    boot = pd.DataFrame([{"dataset": "synthetic", **bootstrap_detection(synthetic, progress=progress,
                                                                          desc="bootstrap (synthetic)")},
                         {"dataset": "real", **bootstrap_detection(real, progress=progress, desc="bootstrap (real)")}])
    images = pd.concat([image_statistics(synthetic).assign(dataset="synthetic"),
                        image_statistics(real).assign(dataset="real")], ignore_index=True)
    share = float((smd["smd"].abs() <= 0.5).mean())
    gap = float(abs(boot.loc[0, "F1"] - boot.loc[1, "F1"]))
    values = {"feature_c2st_auroc": float(c2st.loc[0, "auroc"]), "patch_c2st_auroc": float(c2st["auroc"].iloc[-1]),
              "smd_within_0.5_share": share, "bootstrap_f1_gap": gap}
    patch_note = note or (f"mean of {len(patch_runs)} CNN trainings (seeds {seed}-{seed + len(patch_runs) - 1}), "
                          f"range {min(patch_runs):.3f}-{max(patch_runs):.3f}" if len(patch_runs) > 1
                          else "one CNN training")
    notes = {"feature_c2st_auroc": note, "patch_c2st_auroc": patch_note,
             "smd_within_0.5_share": f"{int((smd['smd'].abs() <= 0.5).sum())} of {len(smd)} class-feature pairs",
             "bootstrap_f1_gap": f"F1 synthetic {boot.loc[0, 'F1']:.1f}, real {boot.loc[1, 'F1']:.1f}"}
    summary = pd.DataFrame([{"quantity": q, "value": v, "target": TARGETS[q], "goal": GOALS.get(q, np.nan),
                             "meets": bool(np.isfinite(v) and (v >= TARGETS[q] if q == "smd_within_0.5_share"
                                                               else v <= TARGETS[q])),
                             "note": notes[q]}
                            for q, v in values.items()])
    nuclei = pd.concat([syn_tab.assign(dataset="synthetic"), real_tab.assign(dataset="real")], ignore_index=True)
    return RealismReport(summary, c2st, smd, boot, images, nuclei)
