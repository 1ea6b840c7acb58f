"""DTALE: Decision Tree Approximation of Learned Embeddings (paper Fig. 7, S14, S15, Table S8; notes section 2h).

The four steps of the paper's Methods, one function each:

1. **Learned embeddings.** :func:`extract_representations` runs a NuCLS model over FOVs and keeps, per detection
   with objectness >= ``threshold``: box, objectness, predicted class, class probabilities, the classifier's input
   representation (``feat_0 ... feat_{D-1}``; with classification convolutions this is the paper's 1024-d
   "cbox" feature just before the logits) and the Hungarian-matched true class (IOU >= 0.5). :func:`embed` maps
   the representations to 2-D with hyperbolic UMAP.
2. **Interpretable features.** :func:`hematoxylin_channel` unmixes the FOV with Macenko-PCA stain estimation
   (HistomicsTK ``color_deconvolution_routine``); :func:`nuclei_features` calls HistomicsTK's
   ``compute_nuclei_features`` **once per FOV** on a label image of all the FOV's nuclei and keeps the 62
   features of Table S8 (:data:`TABLE_S8_FEATURES`).
3. **Regression tree.** :func:`fit_tree`: interpretable features -> 2-D embedding, depth <= 7, >= 250 nuclei
   per leaf.
4. **Node statistics.** :func:`node_statistics` scores every internal node as a one-vs-rest predictor of each
   class the *model* predicted; :func:`best_nodes` picks the representative (max F1) and the discriminative
   (max precision) node per class; :func:`decision_path` gives the rules root -> node, with size thresholds in
   microns.

Decisions (the paper and the reference code leave them open; notes 2h):

* **Hematoxylin intensity** = ``255 - Stains[..., 0]`` of HistomicsTK's deconvolution (Stains is an 8-bit
  "transmitted light" image of each stain, 255 = no stain), so higher = more hematoxylin, in [0, 255]. Integer
  valued, as ``compute_haralick_features`` casts to ``uint8``. If Macenko estimation fails or is not finite
  (e.g. a blank FOV), HistomicsTK's reference H&E matrix (:func:`nucls_utils.stains.stain_matrix`) is used.
* **One ``compute_nuclei_features`` call per FOV** (the reference called it per nucleus). The label image is the
  instance map of the FOV's predicted masks, painted in increasing score, so where masks overlap the more
  confident nucleus is on top and every nucleus is described by what remains visible of it. Nuclei with fewer
  than :data:`MIN_PIXELS` visible pixels get NaN features (and are dropped from the tree fit). Should the per-FOV
  call raise, that FOV falls back to one call per nucleus (a nucleus whose own call fails gets NaN).
  Per-nucleus calls on the nucleus's box plus a 16-px margin (``per_nucleus=True``) gave identical values (max
  difference < 1e-9 over the 726 annotated nuclei of the real sample); ``bench/bench_dtale_features.py``
  times both and reports the agreement.
* **Embedding coordinates for plots** are the Poincare-disk projection of umap-learn's hyperboloid output:
  umap returns ``(x, y)``; the hyperboloid point is ``(x, y, z)`` with ``z = sqrt(1 + x^2 + y^2)``, and the disk
  point is ``(x / (1 + z), y / (1 + z))``, inside the unit circle. The tree is fitted to whichever coordinates
  :func:`embed` returned (``projection='poincare'`` by default).
* **Physical units.** Interpretable features are computed in pixels at 0.2 microns per pixel; rules print size
  thresholds in microns / square microns (:data:`PHYSICAL_UNITS`). The paper's Fig. S14 threshold
  "MajorAxisLength < 36.2" is in pixels: 7.24 microns.
* **Ties** in :func:`best_nodes`: the first maximum in node order (sklearn's node ids are a pre-order, so the
  shallowest/leftmost). An optional ``min_size`` excludes nodes with fewer nuclei.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse

from . import paper
from . import taxonomy as tx
from .config import MICRONS_PER_PIXEL
from .evaluation import f1_from_counts, match_boxes, mcc_from_counts

__all__ = [
    "FEATURE_GROUPS", "TABLE_S8_FEATURES", "PHYSICAL_UNITS", "MIN_PIXELS", "DEFAULT_PROPERTIES",
    "feature_group", "short_name", "to_physical",
    "hematoxylin_channel", "nuclei_features", "extract_interpretable_features", "extract_representations",
    "representation_matrix",
    "embed", "hyperboloid_to_poincare",
    "fit_tree", "fit_statistics", "node_statistics", "best_nodes", "node_members", "node_embedding_means",
    "Rule", "DecisionPath", "decision_path", "simplify_rules", "describe_rules", "class_rules", "ROOT_RULE",
    "missing_rule_notes", "tree_settings", "paper_vs_run", "check_rule_directions",
    "plot_embedding", "plot_tree_overlay", "plot_node_members", "plot_step_by_step", "plot_simplified_tree",
]

# ------------------------------------------------------------------------------------------------------------
# Table S8: the 62 interpretable features (HistomicsTK column names)
# ------------------------------------------------------------------------------------------------------------
_HARALICK = ("ASM", "Contrast", "Correlation", "SumOfSquares", "IDM", "SumAverage", "SumVariance", "SumEntropy",
             "Entropy", "DifferenceVariance", "DifferenceEntropy", "IMC1", "IMC2")

#: Table S8 groups, in the table's order, with HistomicsTK 1.4 ``compute_nuclei_features`` column names.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    # "Pixels occupied by the nucleus; major/minor axes of the same-moment ellipse; 4-connected perimeter"
    "Size": ("Size.Area", "Size.MajorAxisLength", "Size.MinorAxisLength", "Size.Perimeter"),
    # "Circularity, Eccentricity, Equiv. Diam., Extent, Min./Maj. axis, Solidity"
    "Shape": ("Shape.Circularity", "Shape.Eccentricity", "Shape.EquivalentDiameter", "Shape.Extent",
              "Shape.MinorMajorAxisRatio", "Shape.Solidity"),
    # "6 Fourier shape descriptors" (listed under Shape in Table S8)
    "FSD": tuple(f"Shape.FSD{k}" for k in range(1, 7)),
    # hematoxylin intensity statistics
    "Intensity": tuple(f"Nucleus.Intensity.{s}" for s in (
        "Min", "Max", "Mean", "Median", "MeanMedianDiff", "Std", "IQR", "MAD", "Skewness", "Kurtosis",
        "HistEnergy", "HistEntropy")),
    # "Gradients and canny edge filters associated with the hematoxylin intensity channel"
    "Edges": tuple(f"Nucleus.Gradient.{s}" for s in (
        "Mag.Mean", "Mag.Std", "Mag.Skewness", "Mag.Kurtosis", "Mag.HistEntropy", "Mag.HistEnergy",
        "Canny.Sum", "Canny.Mean")),
    # 13 GLCM statistics, each as mean and range over the offsets
    "Haralick": tuple(f"Nucleus.Haralick.{h}.{a}" for h in _HARALICK for a in ("Mean", "Range")),
}

#: The 62 features, ordered by group (Size 4, Shape 6, FSD 6, Intensity 12, Edges 8, Haralick 26).
TABLE_S8_FEATURES: tuple[str, ...] = tuple(f for group in FEATURE_GROUPS.values() for f in group)
assert len(TABLE_S8_FEATURES) == 62

_GROUP_OF = {f: g for g, feats in FEATURE_GROUPS.items() for f in feats}

#: Features with a physical dimension: name -> (factor from pixel units, unit). Everything else is unitless
#: (ratios, intensities on the 0-255 hematoxylin scale, texture statistics, Canny edge pixel counts).
PHYSICAL_UNITS: dict[str, tuple[float, str]] = {
    "Size.Area": (MICRONS_PER_PIXEL ** 2, "µm²"),
    "Size.MajorAxisLength": (MICRONS_PER_PIXEL, "µm"),
    "Size.MinorAxisLength": (MICRONS_PER_PIXEL, "µm"),
    "Size.Perimeter": (MICRONS_PER_PIXEL, "µm"),
    "Shape.EquivalentDiameter": (MICRONS_PER_PIXEL, "µm"),
}

#: Nuclei with fewer visible pixels (0.64 square microns) get NaN features.
MIN_PIXELS = 16


def feature_group(name: str) -> str:
    """Table S8 group of a feature: 'Size', 'Shape', 'FSD', 'Intensity', 'Edges' or 'Haralick'.

    Raises
    ------
    KeyError
        For a name that is not one of :data:`TABLE_S8_FEATURES`.
    """
    try:
        return _GROUP_OF[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a Table S8 feature") from None


def short_name(name: str) -> str:
    """The paper's spelling: ``Size.MajorAxisLength`` -> ``MajorAxisLength``,
    ``Nucleus.Haralick.SumOfSquares.Range`` -> ``Haralick.SumSq.Range``, ``Nucleus.Intensity.Mean`` ->
    ``Intensity.Mean``. Names outside Table S8 are returned unchanged."""
    if name not in _GROUP_OF:
        return name
    out = name.removeprefix("Nucleus.")
    for prefix in ("Size.", "Shape."):
        out = out.removeprefix(prefix)
    return out.replace("SumOfSquares", "SumSq")


def to_physical(name: str, value):
    """A feature value (pixel units) in the units of :data:`PHYSICAL_UNITS` (unchanged for unitless features)."""
    factor = PHYSICAL_UNITS.get(name, (1.0, ""))[0]
    return np.asarray(value, dtype=float) * factor if np.ndim(value) else float(value) * factor


# ------------------------------------------------------------------------------------------------------------
# Step 2: interpretable features
# ------------------------------------------------------------------------------------------------------------
def hematoxylin_channel(rgb: np.ndarray, *, method: str = "macenko_pca") -> np.ndarray:
    """Hematoxylin intensity ``(H, W) float64`` in [0, 255] (higher = more hematoxylin), integer valued.

    ``255 - Stains[..., 0]`` of ``histomicstk...color_deconvolution_routine(rgb, stain_unmixing_method=method)``
    (the stain matrix is estimated from this image; HistomicsTK reorders the estimated stains so that channel 0
    is hematoxylin). Falls back to the fixed reference H&E matrix when the estimate fails or is not finite.
    """
    from histomicstk.preprocessing.color_deconvolution import color_deconvolution, color_deconvolution_routine

    from .stains import stain_matrix

    rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3])
    stains = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            stains, _, w = color_deconvolution_routine(rgb, stain_unmixing_method=method)
            if not np.all(np.isfinite(w)):
                stains = None
        except (ValueError, np.linalg.LinAlgError, FloatingPointError, ZeroDivisionError, IndexError):
            stains = None
        if stains is None:
            stains = color_deconvolution(rgb, stain_matrix()).Stains
    return 255.0 - np.asarray(stains[..., 0], dtype=np.float64)


def _htk_features(label_image: np.ndarray, intensity: np.ndarray) -> pd.DataFrame:
    """``compute_nuclei_features`` without cytoplasm, indexed by label, Table S8 columns only, inf -> NaN."""
    from histomicstk.features import compute_nuclei_features

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage deprecations inside HistomicsTK; NaN moments of flat nuclei
        with np.errstate(all="ignore"):
            df = compute_nuclei_features(label_image, im_nuclei=intensity, im_cytoplasm=None)
    out = df.set_index(df["Label"].astype(np.int64)).reindex(columns=list(TABLE_S8_FEATURES)).astype(float)
    out.index.name = "label"
    return out.replace([np.inf, -np.inf], np.nan)


def _per_nucleus(label_image: np.ndarray, intensity: np.ndarray, labels: np.ndarray, margin: int) -> pd.DataFrame:
    """One ``compute_nuclei_features`` call per label, on the label's bounding box plus ``margin`` pixels."""
    from scipy import ndimage as ndi

    h, w = label_image.shape
    slices = ndi.find_objects(label_image)
    rows = []
    for lab in labels:
        sl = slices[lab - 1] if 0 < lab <= len(slices) else None
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - margin, 0), min(sl[0].stop + margin, h)
        x0, x1 = max(sl[1].start - margin, 0), min(sl[1].stop + margin, w)
        sub = (label_image[y0:y1, x0:x1] == lab).astype(np.int32) * int(lab)
        try:
            rows.append(_htk_features(sub, intensity[y0:y1, x0:x1]))
        except (ValueError, IndexError, ZeroDivisionError, np.linalg.LinAlgError):
            continue  # left NaN
    if not rows:
        return pd.DataFrame(columns=list(TABLE_S8_FEATURES), dtype=float)
    return pd.concat(rows)


def nuclei_features(label_image: np.ndarray, hematoxylin: np.ndarray, *, labels: Iterable[int] | None = None,
                    min_pixels: int = MIN_PIXELS, per_nucleus: bool = False, margin: int = 16) -> pd.DataFrame:
    """The 62 Table S8 features of every nucleus of one FOV.

    Parameters
    ----------
    label_image : (H, W) int ndarray
        0 = background, ``k`` = nucleus ``k``.
    hematoxylin : (H, W) float ndarray
        :func:`hematoxylin_channel` of the FOV.
    labels : iterable of int, optional
        Rows to return, in this order (default: every label present). Labels absent from the image, or with
        fewer than ``min_pixels`` pixels, get NaN.
    per_nucleus : bool
        One HistomicsTK call per nucleus on its bounding box plus ``margin`` pixels (for the benchmark and as
        the fallback) instead of one call for the whole FOV; same values, slower.

    Returns
    -------
    DataFrame indexed by ``label`` with ``n_pixels`` and the :data:`TABLE_S8_FEATURES` columns (pixel units).
    """
    lab = np.asarray(label_image)
    if lab.ndim != 2 or lab.shape != np.shape(hematoxylin):
        raise ValueError(f"label image {lab.shape} and hematoxylin {np.shape(hematoxylin)} must be equal 2-D shapes")
    lab = lab.astype(np.int32, copy=False)
    if lab.min(initial=0) < 0:
        raise ValueError("labels must be non-negative")
    counts = np.bincount(lab.ravel())
    present = np.flatnonzero(counts)
    present = present[present > 0]
    labels = present if labels is None else np.asarray(list(labels), dtype=np.int64)
    n_pixels = np.where(labels < len(counts), counts[np.clip(labels, 0, len(counts) - 1)], 0)
    n_pixels = np.where(labels > 0, n_pixels, 0)
    keep = present[counts[present] >= min_pixels]
    intensity = np.asarray(hematoxylin, dtype=np.float64)
    feats = pd.DataFrame(columns=list(TABLE_S8_FEATURES), dtype=float)
    if len(keep):
        work = lab
        if len(keep) < len(present):  # small remnants become background so they cost nothing
            lut = np.zeros(len(counts), dtype=np.int32)
            lut[keep] = keep
            work = lut[lab]
        if per_nucleus:
            feats = _per_nucleus(work, intensity, keep, margin)
        else:
            try:
                feats = _htk_features(work, intensity)
            except (ValueError, IndexError, ZeroDivisionError, np.linalg.LinAlgError):
                feats = _per_nucleus(work, intensity, keep, margin)
    out = feats.reindex(labels)
    out.insert(0, "n_pixels", n_pixels.astype(np.int64))
    out.index = pd.Index(labels, name="label")
    return out


def extract_interpretable_features(samples: Sequence, instance_maps: Mapping[str, np.ndarray], *,
                                   min_pixels: int = MIN_PIXELS, per_nucleus: bool = False,
                                   progress: bool = True) -> pd.DataFrame:
    """:func:`nuclei_features` of every FOV: one row per label of each instance map.

    Parameters
    ----------
    samples : sequence of objects with ``name`` and ``rgb`` (e.g. :class:`~nucls_utils.model.data.FovSample`)
    instance_maps : FOV name -> (H, W) label image (missing FOVs are skipped)

    Returns
    -------
    DataFrame with ``fov``, ``label``, ``n_pixels`` and the 62 features.
    """
    from tqdm.auto import tqdm

    parts = []
    for s in tqdm(samples, desc="interpretable features", unit="fov", disable=not progress):
        lab = instance_maps.get(s.name)
        if lab is None:
            continue
        labels = np.arange(1, int(lab.max(initial=0)) + 1)
        f = nuclei_features(lab, hematoxylin_channel(s.rgb), labels=labels, min_pixels=min_pixels,
                            per_nucleus=per_nucleus).reset_index()
        f.insert(0, "fov", s.name)
        parts.append(f)
    if not parts:
        return pd.DataFrame(columns=["fov", "label", "n_pixels", *TABLE_S8_FEATURES])
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------------------------------------
# Step 1: representations of the model's detections
# ------------------------------------------------------------------------------------------------------------
def _super_or_nan(name):
    try:
        return tx.to_super(name)
    except (tx.UnknownClassError, KeyError, TypeError):
        return np.nan


def extract_representations(model, samples: Sequence, *, threshold: float = 0.5, mask_threshold: float = 0.5,
                            min_iou: float = 0.5, interpretable: bool = True, min_pixels: int = MIN_PIXELS,
                            progress: bool = True) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per-detection representations, predictions, matched truth and (optionally) interpretable features.

    Parameters
    ----------
    model : NucleusMaskRCNN, or a callable ``rgb -> Detections``
        Predicted on each FOV with :func:`nucls_utils.model.inference.predict_fovs` (one pass for a FOV up to
        512 px a side, tiled otherwise), asking for the classifier's features.
    samples : sequence of :class:`~nucls_utils.model.data.FovSample`
        FOV-cropped (and colour-normalised, if the model was trained so) RGBs with their true ``boxes`` and
        ``classes`` (main classes, AMBIGUOUS included).
    threshold : float
        Minimum objectness of a kept detection.
    mask_threshold : float
        Mask probability threshold of the instance maps.
    min_iou : float
        Hungarian matching of predicted to true boxes (:func:`nucls_utils.evaluation.match_boxes`).
    interpretable : bool
        Also compute the 62 Table S8 features (:func:`nuclei_features` on each FOV's instance map).

    Returns
    -------
    table : DataFrame, one row per kept detection
        ``fov``, ``label`` (its value in the FOV's instance map), ``xmin ymin xmax ymax`` (FOV-crop pixels),
        ``score`` (objectness), ``pred_class``, ``pred_super``, ``prob_<class>`` per model class,
        ``true_class`` (main class of the matched true nucleus, AMBIGUOUS possible; NaN when unmatched),
        ``true_super``, ``matched`` (bool), ``match_iou``, ``mask_pixels`` (pixels of its own mask),
        ``n_pixels`` (pixels still visible in the instance map), then the 62 features (``interpretable``), then
        ``feat_0 ... feat_{D-1}`` (float32; absent when the model returns no features). See
        :func:`representation_matrix`.
    instance_maps : dict FOV name -> (H, W) int32
        Label ``k`` = the FOV's ``k``-th kept detection (decreasing score), painted in increasing score so the
        most confident mask is on top.
    """
    from tqdm.auto import tqdm

    from .model.inference import predict_fovs

    rows, feats, maps = [], [], {}
    for s in tqdm(samples, desc="representations", unit="fov", disable=not progress):
        rgb = np.array(s.rgb, copy=True)  # writable: torch warns on read-only arrays (PIL-backed RGBs)
        det = predict_fovs(model, [rgb], progress=False, return_features=True)[0]
        det = det.select(det.scores >= threshold)
        shape = s.rgb.shape[:2]
        lab = det.instance_map(shape, mask_threshold) if det.mask_probs is not None else \
            np.zeros(shape, np.int32)
        maps[s.name] = lab
        df = det.to_frame()
        df.insert(0, "label", np.arange(1, len(det) + 1))
        df.insert(0, "fov", s.name)
        df["pred_super"] = [_super_or_nan(c) for c in df["pred_class"]]
        true_cls = np.full(len(det), np.nan, dtype=object)
        iou = np.full(len(det), np.nan)
        truth_boxes = np.asarray(s.boxes, dtype=float).reshape(-1, 4)
        if len(det) and len(truth_boxes):
            ti, pi, ious = match_boxes(truth_boxes, det.boxes, min_iou)
            true_cls[pi] = np.asarray(s.classes, dtype=object)[ti]
            iou[pi] = ious
        df["true_class"] = true_cls
        df["true_super"] = [_super_or_nan(c) if isinstance(c, str) else np.nan for c in true_cls]
        df["matched"] = ~np.isnan(iou)
        df["match_iou"] = iou
        if det.mask_probs is not None and len(det):
            df["mask_pixels"] = [int(m.sum()) for _, m in det.local_masks(mask_threshold)]
        else:
            df["mask_pixels"] = 0
        counts = np.bincount(lab.ravel(), minlength=len(det) + 1)
        df["n_pixels"] = counts[1:len(det) + 1]
        if interpretable:
            f = nuclei_features(lab, hematoxylin_channel(s.rgb), labels=df["label"].to_numpy(),
                                min_pixels=min_pixels)
            df = pd.concat([df.reset_index(drop=True), f[list(TABLE_S8_FEATURES)].reset_index(drop=True)], axis=1)
        rows.append(df)
        feats.append(None if det.features is None else det.features.astype(np.float32))
    if not rows:
        return pd.DataFrame(), maps
    table = pd.concat(rows, ignore_index=True)
    if all(f is not None for f in feats):
        fm = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
        table = pd.concat([table, pd.DataFrame(fm, columns=[f"feat_{j}" for j in range(fm.shape[1])])], axis=1)
    return table, maps


def representation_matrix(table: pd.DataFrame) -> np.ndarray:
    """The ``feat_0 ... feat_{D-1}`` columns of :func:`extract_representations` as an ``(N, D) float32`` array."""
    cols = sorted((c for c in table.columns if isinstance(c, str) and c.startswith("feat_")),
                  key=lambda c: int(c[5:]))
    if not cols:
        raise ValueError("the table has no feat_* columns (the model returned no features)")
    return table[cols].to_numpy(dtype=np.float32)


# ------------------------------------------------------------------------------------------------------------
# Step 1b: hyperbolic UMAP
# ------------------------------------------------------------------------------------------------------------
def hyperboloid_to_poincare(xy: np.ndarray) -> np.ndarray:
    """umap's hyperboloid ``(x, y)`` -> Poincare disk ``(x, y) / (1 + z)``, ``z = sqrt(1 + x^2 + y^2)``."""
    xy = np.asarray(xy, dtype=float)
    z = np.sqrt(1.0 + np.sum(xy ** 2, axis=1, keepdims=True))
    return xy / (1.0 + z)


def embed(features: np.ndarray, *, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
          metric: str = "euclidean", projection: str = "poincare", **umap_kwargs) -> np.ndarray:
    """2-D hyperbolic UMAP of the representations (umap-learn, ``output_metric='hyperboloid'``).

    Parameters
    ----------
    features : (N, D) array
    seed : int
        ``random_state`` of UMAP (makes it deterministic and single-threaded).
    projection : 'poincare' or 'hyperboloid'
        ``'poincare'`` (default, used for the plots and the tree): points in the unit disk, see
        :func:`hyperboloid_to_poincare`. ``'hyperboloid'``: umap's raw ``(x, y)``; the third hyperboloid
        coordinate is ``z = sqrt(1 + x^2 + y^2)``.
    **umap_kwargs
        Passed to ``umap.UMAP`` (e.g. ``n_epochs``).

    Returns
    -------
    (N, 2) float64 ndarray
    """
    if projection not in ("poincare", "hyperboloid"):
        raise ValueError(f"projection must be 'poincare' or 'hyperboloid', not {projection!r}")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) <= n_neighbors:
        raise ValueError(f"need an (N, D) array with N > n_neighbors={n_neighbors}, got {x.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba / "n_jobs overridden by random_state" notices
        import umap

        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                            output_metric="hyperboloid", random_state=seed, n_jobs=1, **umap_kwargs)
        xy = np.asarray(reducer.fit_transform(x), dtype=np.float64)
    return hyperboloid_to_poincare(xy) if projection == "poincare" else xy


# ------------------------------------------------------------------------------------------------------------
# Step 3: the regression tree
# ------------------------------------------------------------------------------------------------------------
def _matrix(X) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(X, pd.DataFrame):
        return X.to_numpy(dtype=np.float32), [str(c) for c in X.columns]
    return np.asarray(X, dtype=np.float32), None


def _finite_rows(Xm: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(Xm), axis=1)


def fit_tree(X, Y, *, max_depth: int = 7, min_samples_leaf: int = 250, random_state: int = 0):
    """Regression tree from interpretable features to the 2-D embedding (the paper's constraints by default).

    Rows with a NaN or infinite feature (or embedding) are dropped. The tree is fitted on a float32 array (no
    pandas feature names, so later ``apply``/``predict`` on arrays raise no warning); the extra attributes are

    * ``dtale_feature_names_``: the column names of ``X`` (or ``f0, f1, ...``),
    * ``rows_used_``: (N,) bool, the rows fitted,
    * ``n_dropped_``: how many rows were dropped.

    Returns
    -------
    sklearn.tree.DecisionTreeRegressor
    """
    from sklearn.tree import DecisionTreeRegressor

    Xm, names = _matrix(X)
    Ym = np.asarray(Y, dtype=np.float64).reshape(len(Xm), -1)
    rows = _finite_rows(Xm) & np.all(np.isfinite(Ym), axis=1)
    tree = DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                 random_state=random_state)
    tree.fit(Xm[rows], Ym[rows])
    tree.dtale_feature_names_ = names or [f"f{j}" for j in range(Xm.shape[1])]
    tree.rows_used_ = rows
    tree.n_dropped_ = int((~rows).sum())
    return tree


def fit_statistics(tree, X, Y) -> dict:
    """Fidelity of the tree on ``(X, Y)`` (finite rows): R^2 per embedding axis and overall, sizes."""
    from sklearn.metrics import r2_score

    Xm, _ = _matrix(X)
    Ym = np.asarray(Y, dtype=np.float64).reshape(len(Xm), -1)
    rows = _finite_rows(Xm) & np.all(np.isfinite(Ym), axis=1)
    pred = tree.predict(Xm[rows]).reshape(int(rows.sum()), -1)
    t = tree.tree_
    out = {"n_rows": int(rows.sum()), "n_dropped": int((~rows).sum()), "n_nodes": int(t.node_count),
           "n_leaves": int(tree.get_n_leaves()), "depth": int(tree.get_depth()),
           "r2": float(r2_score(Ym[rows], pred, multioutput="variance_weighted"))}
    for j in range(Ym.shape[1]):
        out[f"r2_axis{j}"] = float(r2_score(Ym[rows, j], pred[:, j]))
    return out


def _parents_depths(tree) -> tuple[np.ndarray, np.ndarray]:
    t = tree.tree_
    n = t.node_count
    parent = np.full(n, -1, dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    for node in range(n):  # pre-order: a parent's id is smaller than its children's
        for child in (t.children_left[node], t.children_right[node]):
            if child != -1:
                parent[child] = node
                depth[child] = depth[node] + 1
    return parent, depth


def _membership(tree, X) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (N_finite, n_nodes) indicator of the nodes on each finite row's path, and the finite-row mask."""
    Xm, _ = _matrix(X)
    rows = _finite_rows(Xm)
    return tree.decision_path(Xm[rows]).tocsr(), rows


# ------------------------------------------------------------------------------------------------------------
# Step 4: node statistics
# ------------------------------------------------------------------------------------------------------------
def node_statistics(tree, X, predicted_classes, *, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """One-vs-rest scores of every internal node for every predicted class.

    For node ``n`` and class ``c``: ``in_n`` = the nucleus's path passes through ``n`` (its leaf lies in ``n``'s
    subtree), ``is_c`` = the model predicted ``c``; TP = in_n & is_c, FP = in_n & ~is_c, FN = ~in_n & is_c,
    TN = the rest. Computed for all nodes and classes at once as one sparse product of the decision-path matrix
    (N x nodes) with the one-hot predictions (N x classes). Rows of ``X`` with a non-finite feature are ignored
    (the count is in ``attrs['n_dropped']``).

    Parameters
    ----------
    tree : fitted DecisionTreeRegressor (:func:`fit_tree`)
    X : (N, F) features, the columns the tree was fitted on
    predicted_classes : (N,) the model's predicted class of each row
    classes : classes to score, in this order (default: the sorted distinct predictions)

    Returns
    -------
    DataFrame, one row per (internal node, class): ``node, depth, parent, feature, threshold, n_node, class,
    n_class, TP, FP, FN, TN, precision, recall, f1, mcc``.
    """
    P, rows = _membership(tree, X)
    y = np.asarray(predicted_classes, dtype=object).ravel()
    if len(y) != len(rows):
        raise ValueError(f"{len(rows)} rows of X but {len(y)} predicted classes")
    y = y[rows]
    if classes is None:
        classes = sorted({str(c) for c in y})
    classes = list(classes)
    code = pd.Categorical(y.astype(str), categories=classes).codes
    n = len(y)
    ok = code >= 0
    onehot = sparse.csr_matrix((np.ones(int(ok.sum())), (np.flatnonzero(ok), code[ok])), shape=(n, len(classes)))
    tp = np.asarray((P.T @ onehot).todense(), dtype=np.int64)  # (nodes, K)
    size = np.asarray(P.sum(axis=0), dtype=np.int64).ravel()
    pos = np.asarray(onehot.sum(axis=0), dtype=np.int64).ravel()
    fp = size[:, None] - tp
    fn = pos[None, :] - tp
    tn = n - tp - fp - fn
    t = tree.tree_
    internal = np.flatnonzero(t.children_left != -1)
    parent, depth = _parents_depths(tree)
    names = getattr(tree, "dtale_feature_names_", None) or [f"f{j}" for j in range(t.n_features)]
    k = len(classes)
    sel = np.repeat(internal, k)
    cls_idx = np.tile(np.arange(k), len(internal))
    TP, FP, FN, TN = (a[sel, cls_idx] for a in (tp, fp, fn, tn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(TP + FP > 0, TP / (TP + FP), np.nan)
        recall = np.where(TP + FN > 0, TP / (TP + FN), np.nan)
        f1 = f1_from_counts(TP, FP, FN, empty=np.nan)
    out = pd.DataFrame({
        "node": sel, "depth": depth[sel], "parent": parent[sel],
        "feature": [names[t.feature[i]] for i in sel], "threshold": t.threshold[sel],
        "n_node": size[sel], "class": np.asarray(classes, dtype=object)[cls_idx], "n_class": pos[cls_idx],
        "TP": TP, "FP": FP, "FN": FN, "TN": TN, "precision": precision, "recall": recall, "f1": f1,
        "mcc": mcc_from_counts(TP, FP, TN, FN) if len(sel) else np.zeros(0),
    })
    out.attrs["n_rows"] = int(n)
    out.attrs["n_dropped"] = int((~rows).sum())
    return out


def best_nodes(stats: pd.DataFrame, metric: str = "f1", *, min_size: int | None = None) -> pd.DataFrame:
    """The node with the highest ``metric`` for each class.

    ``metric='f1'`` gives the *representative* node, ``'precision'`` the *discriminative* node (paper, "Node fit
    statistics"). Ties go to the first maximum in node order (pre-order: shallowest, then leftmost). Nodes with
    fewer than ``min_size`` nuclei are not considered (default: all internal nodes; the tree's
    ``min_samples_leaf`` already bounds node sizes from below). A class whose best value is 0 (never predicted
    inside any node) is kept with ``informative = False``.

    Returns
    -------
    DataFrame indexed by class: the chosen row of ``stats`` plus ``metric`` and ``informative``.
    """
    if metric not in stats.columns:
        raise KeyError(f"unknown metric {metric!r}; choose one of precision, recall, f1, mcc")
    s = stats if min_size is None else stats[stats["n_node"] >= min_size]
    s = s.sort_values(["class", "node"], kind="stable")
    picks = []
    for _, g in s.groupby("class", sort=False):
        vals = g[metric].to_numpy(dtype=float)
        if np.isfinite(vals).any():
            picks.append(g.index[int(np.nanargmax(vals))])  # first maximum
    out = s.loc[picks].set_index("class")
    out["metric"] = metric
    out["informative"] = out[metric].astype(float) > 0
    return out


def node_members(tree, X, node: int) -> np.ndarray:
    """(N,) bool: whether each row of ``X`` passes through ``node`` (False for rows with a NaN feature)."""
    P, rows = _membership(tree, X)
    out = np.zeros(len(rows), dtype=bool)
    out[np.flatnonzero(rows)] = np.asarray(P[:, node].todense()).ravel() > 0
    return out


def node_embedding_means(tree, X, embedding: np.ndarray) -> np.ndarray:
    """(n_nodes, 2) mean embedding of the nuclei passing through each node (NaN for an empty node)."""
    P, rows = _membership(tree, X)
    emb = np.asarray(embedding, dtype=float)[rows]
    size = np.asarray(P.sum(axis=0)).ravel()
    sums = np.asarray(P.T @ emb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / size[:, None]


# ------------------------------------------------------------------------------------------------------------
# Decision paths and rules
# ------------------------------------------------------------------------------------------------------------
class Rule(NamedTuple):
    """One split on a path: ``feature op threshold`` with ``op`` in ``'<='``, ``'>'``; threshold in pixel units."""

    feature: str
    op: str
    threshold: float

    def format(self, units: str = "physical", digits: int = 3) -> str:
        """``'MajorAxisLength <= 7.24 µm'`` (``units='physical'``) or ``'MajorAxisLength <= 36.2'`` (pixels)."""
        value, unit = self.threshold, ""
        if units == "physical" and self.feature in PHYSICAL_UNITS:
            factor, unit = PHYSICAL_UNITS[self.feature]
            value = value * factor
        elif units not in ("physical", "pixels"):
            raise ValueError(f"units must be 'physical' or 'pixels', not {units!r}")
        text = f"{short_name(self.feature)} {self.op} {value:.{digits}g}"
        return f"{text} {unit}" if unit else text


#: The rule text of the root node (an empty decision path).
ROOT_RULE = "(all nuclei)"


def describe_rules(rules: Iterable[Rule], units: str = "physical", digits: int = 3) -> str:
    """Rules joined with ``' AND '`` (:data:`ROOT_RULE` for an empty path)."""
    parts = [Rule(*r).format(units, digits) for r in rules]
    return " AND ".join(parts) if parts else ROOT_RULE


def simplify_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Keep the tightest bound per (feature, direction), in order of first appearance."""
    best: dict[tuple[str, str], Rule] = {}
    for r in rules:
        r = Rule(*r)
        key = (r.feature, r.op)
        old = best.get(key)
        if old is None or (r.threshold < old.threshold if r.op == "<=" else r.threshold > old.threshold):
            best[key] = r
    order = list(dict.fromkeys((Rule(*r).feature, Rule(*r).op) for r in rules))
    return [best[k] for k in order]


@dataclass
class DecisionPath:
    """Rules from the root to ``node``; iterating gives the :class:`Rule` s, ``str()`` the readable text."""

    node: int
    nodes: list[int]
    rules: list[Rule]
    text: str
    units: str = "physical"
    simplified: list[Rule] = field(default_factory=list)

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __str__(self) -> str:
        return self.text


def decision_path(tree, node: int, feature_names: Sequence[str] | None = None, *, units: str = "physical",
                  digits: int = 3) -> DecisionPath:
    """The splits from the root to ``node``.

    Parameters
    ----------
    feature_names : names of the tree's input columns (default: ``tree.dtale_feature_names_``)
    units : 'physical' (size thresholds in microns / square microns) or 'pixels', for the text only; the
        :class:`Rule` thresholds are always in the features' own (pixel) units.

    Returns
    -------
    DecisionPath with ``nodes`` (root ... node), ``rules`` (one per edge), ``text`` (e.g.
    ``'MajorAxisLength <= 7.24 µm AND Haralick.SumSq.Range > 2.1'``) and ``simplified`` (:func:`simplify_rules`).
    """
    t = tree.tree_
    if not 0 <= node < t.node_count:
        raise ValueError(f"node {node} is not in the tree (0 ... {t.node_count - 1})")
    names = list(feature_names) if feature_names is not None else (
        getattr(tree, "dtale_feature_names_", None) or [f"f{j}" for j in range(t.n_features)])
    parent, _ = _parents_depths(tree)
    nodes = [node]
    while parent[nodes[-1]] != -1:
        nodes.append(int(parent[nodes[-1]]))
    nodes.reverse()
    rules = []
    for a, c in zip(nodes[:-1], nodes[1:], strict=True):
        op = "<=" if c == t.children_left[a] else ">"
        rules.append(Rule(names[t.feature[a]], op, float(t.threshold[a])))
    return DecisionPath(node=int(node), nodes=[int(v) for v in nodes], rules=rules,
                        text=describe_rules(rules, units, digits), units=units, simplified=simplify_rules(rules))


def class_rules(tree, stats: pd.DataFrame, *, feature_names: Sequence[str] | None = None, min_size: int | None = None,
                units: str = "physical") -> tuple[pd.DataFrame, dict[str, list[Rule]]]:
    """Each class's representative (best F1) and discriminative (best precision) node, with readable rules.

    Returns
    -------
    table : one row per class: node ids, sizes, F1 / precision / recall of both nodes, and their decision paths
        (``units`` for the text: size thresholds in microns by default).
    rules : class -> the (simplified) rules of its discriminative path, for :func:`check_rule_directions`.
    """
    rep = best_nodes(stats, "f1", min_size=min_size)
    dis = best_nodes(stats, "precision", min_size=min_size)
    rows, rules = [], {}
    for cls in rep.index:
        r, d = rep.loc[cls], dis.loc[cls]
        rp = decision_path(tree, int(r["node"]), feature_names, units=units)
        dp = decision_path(tree, int(d["node"]), feature_names, units=units)
        rules[cls] = dp.simplified
        rows.append({"class": cls, "n_predicted": int(r["n_class"]),
                     "representative node": int(r["node"]), "rep. size": int(r["n_node"]), "rep. F1": r["f1"],
                     "rep. precision": r["precision"], "rep. recall": r["recall"],
                     "representative rule": describe_rules(rp.simplified, units),
                     "discriminative node": int(d["node"]), "disc. size": int(d["n_node"]),
                     "disc. precision": d["precision"], "disc. F1": d["f1"], "disc. recall": d["recall"],
                     "discriminative rule": describe_rules(dp.simplified, units),
                     "informative": bool(r["informative"])})
    return pd.DataFrame(rows), rules


def missing_rule_notes(table: pd.DataFrame, predicted, classes: Iterable[str], *, root: bool = True) -> dict[str, str]:
    """Why a class of ``classes`` has no rule, or only the root, in a :func:`class_rules` ``table`` built from the
    predictions ``predicted`` (one label per explained nucleus): class -> a sentence, for the classes that need one
    (a class the model never predicts has no node to score; a class predicted for so many nuclei that "every
    nucleus" is its best-F1 statement has the root as its representative node; ``root=False`` leaves that case out)."""
    predicted = pd.Series(np.asarray(predicted, dtype=object))
    by_class = table.set_index("class") if len(table) else pd.DataFrame(columns=["representative rule"])
    notes = {}
    for cls in classes:
        n = int((predicted == cls).sum())
        if cls not in by_class.index:
            notes[cls] = (f"not measured: the model predicts {n} {cls} nuclei of {len(predicted)}, so DTALE has no "
                          "such class to explain")
        elif root and by_class.loc[cls, "representative rule"] == ROOT_RULE:
            notes[cls] = (f"the root node: {n / max(len(predicted), 1):.0%} of the explained nuclei are predicted "
                          f"{cls}, so 'every nucleus' is the best-F1 statement")
    return notes


def tree_settings(profile: str, n_nuclei: int, max_depth: int = 0, min_samples_leaf: int = 0) -> tuple[int, int]:
    """The tree's ``(max_depth, min_samples_leaf)``: the values given, or (0) the defaults: the paper's depth; the
    paper's minimum leaf where the profile says so, else the profile's share of the explained nuclei (at least its
    floor; ``tree_min_leaf_share``, ``tree_min_leaf_floor`` of :class:`nucls_utils.profiles.StudySettings`)."""
    from .profiles import settings

    s = settings(profile)
    depth = int(max_depth) or int(paper.value("fig7.tree_max_depth"))
    if min_samples_leaf:
        leaf = int(min_samples_leaf)
    elif s.tree_min_leaf_share is None:
        leaf = int(paper.value("fig7.tree_min_samples_leaf"))
    else:
        leaf = max(s.tree_min_leaf_floor, int(round(s.tree_min_leaf_share * n_nuclei)))
    return depth, leaf


def paper_vs_run(rules: Mapping[str, pd.DataFrame], *, max_depth: int, min_samples_leaf: int, n_explained: int,
                 notes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Notebook 07's "paper vs this run" table from :func:`class_rules` tables per level (``'super'``, ``'main'``).

    ``notes``: class -> why its row is empty or degenerate (:func:`missing_rule_notes`). Returns ``quantity, paper,
    this_run, note, source, paper_key`` (paper values from :mod:`nucls_utils.paper`), every cell as text.
    """
    notes = dict(notes or {})

    def val(level: str, cls: str, col: str):
        r = rules[level].set_index("class") if len(rules[level]) else pd.DataFrame()
        return round(float(r.loc[cls, col]), 3) if cls in r.index else None

    main = rules["main"].set_index("class") if len(rules["main"]) else pd.DataFrame()
    lym_rule = main.loc["lymphocyte", "representative rule"] if "lymphocyte" in main.index else None
    rows = [paper.row("fig7.disc_precision_tumor", "discriminative precision, tumor",
                      val("super", "tumor_any", "disc. precision"), notes.get("tumor_any", "")),
            paper.row("fig7.disc_precision_stroma", "discriminative precision, stroma",
                      val("super", "nonTIL_stromal", "disc. precision"), notes.get("nonTIL_stromal", "")),
            paper.row("fig7.disc_precision_stils", "discriminative precision, sTILs",
                      val("super", "sTIL", "disc. precision"), notes.get("sTIL", "")),
            paper.row("figS14.lymphocyte_rep_f1", "lymphocyte representative F1", val("main", "lymphocyte", "rep. F1")),
            paper.row("figS14.lymphocyte_rep_rule", "lymphocyte representative rule", lym_rule,
                      notes.get("lymphocyte", "")),
            paper.row("fig7.tree_max_depth", "tree max_depth", max_depth),
            paper.row("fig7.tree_min_samples_leaf", "tree min_samples_leaf", min_samples_leaf,
                      "" if min_samples_leaf == paper.value("fig7.tree_min_samples_leaf")
                      else "scaled to the number of nuclei explained here"),
            {"quantity": "nuclei explained", "paper": None, "this_run": n_explained, "note": "", "source": None,
             "paper_key": None}]
    def text(v) -> str:
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else str(v)

    return pd.DataFrame(rows).map(text)


# ------------------------------------------------------------------------------------------------------------
# Plausibility of the rules (synthetic cohort: the morphology the phantom was drawn with)
# ------------------------------------------------------------------------------------------------------------
_SIZE = ("Size.Area", "Size.MajorAxisLength", "Size.MinorAxisLength", "Size.Perimeter", "Shape.EquivalentDiameter")

#: (class family, property) -> feature -> the op a rule must have to support the property.
DEFAULT_PROPERTIES: dict[tuple[str, str], dict[str, str]] = {
    ("lymphocyte", "small"): {f: "<=" for f in _SIZE},
    ("lymphocyte", "round"): {"Shape.Circularity": ">", "Shape.MinorMajorAxisRatio": ">",
                              "Shape.Eccentricity": "<="},
    ("fibroblast", "elongated"): {"Shape.Eccentricity": ">", "Shape.MinorMajorAxisRatio": "<=",
                                  "Shape.Circularity": "<="},
    ("tumor", "large"): {f: ">" for f in _SIZE},
}

#: Class names (raw, main, super) that stand for each family.
_FAMILY = {"lymphocyte": ("lymphocyte", "sTIL"),
           "fibroblast": ("fibroblast", "nonTILnonMQ_stromal", "nonTIL_stromal"),
           "tumor": ("tumor", "tumor_nonMitotic", "tumor_any")}


def check_rule_directions(rules_by_class: Mapping[str, Iterable], *,
                          properties: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> pd.DataFrame:
    """Whether each class's rules point the way the class's known morphology says.

    Checks (``properties``, default :data:`DEFAULT_PROPERTIES`): lymphocytes *small* (an upper bound ``<=`` on
    a size feature: area, major/minor axis, perimeter, equivalent diameter) and *round* (circularity or
    minor/major ratio ``>``, or eccentricity ``<=``); fibroblasts *elongated* (eccentricity ``>``, or minor/major
    ratio or circularity ``<=``); tumor *large* (a lower bound ``>`` on a size feature). A class is looked up
    under its raw, main or super name (``lymphocyte``/``sTIL``, ``fibroblast``/``nonTILnonMQ_stromal``/
    ``nonTIL_stromal``, ``tumor``/``tumor_nonMitotic``/``tumor_any``; the first one present is used).

    Status: ``pass`` = at least one rule on the property's features has the expected direction; ``fail`` =
    there are rules on those features but all point the other way; ``not tested`` = no rule uses them (or the
    class is absent). The direction is what is judged, not the threshold's value.

    Parameters
    ----------
    rules_by_class : class -> iterable of ``(feature, op, threshold)`` (a :class:`DecisionPath` works)
    """
    properties = DEFAULT_PROPERTIES if properties is None else properties
    rows = []
    for (family, prop), expected in properties.items():
        names = _FAMILY.get(family, (family,))
        cls = next((c for c in names if c in rules_by_class), None)
        rules = [Rule(*r) for r in rules_by_class[cls]] if cls is not None else []
        relevant = [r for r in rules if r.feature in expected]
        good = [r for r in relevant if r.op == expected[r.feature]]
        if not relevant:
            status = "not tested"
        else:
            status = "pass" if good else "fail"
        rows.append({"family": family, "class": cls, "property": prop, "status": status,
                     "n_supporting": len(good), "n_opposing": len(relevant) - len(good),
                     "rules": "; ".join(r.format() for r in relevant),
                     "expected": ", ".join(f"{short_name(f)} {op}" for f, op in expected.items())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------------------
def _class_colors(classes: Iterable[str]) -> dict[str, str]:
    import matplotlib.pyplot as plt

    known = {**tx.RAW_COLORS, **tx.SUPER_COLORS, **tx.MAIN_COLORS}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    out, k = {}, 0
    for c in classes:
        if c in known:
            out[c] = known[c]
        else:
            out[c] = cycle[k % len(cycle)]
            k += 1
    return out


def _ordered_classes(labels) -> list[str]:
    present = pd.unique(pd.Series(labels, dtype=object).dropna().astype(str))
    order = [c for c in (*tx.MAIN_CLASSES, *tx.SUPER_CLASSES, *tx.RAW_CLASSES) if c in present]
    return list(dict.fromkeys(order)) + sorted(c for c in present if c not in order)


def _new_ax(ax, figsize=(5.5, 5.0)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _disk(ax, embedding: np.ndarray) -> None:
    if np.nanmax(np.abs(embedding)) <= 1.0:  # Poincare disk: draw the boundary circle
        import matplotlib.pyplot as plt

        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, lw=0.6, color="0.6"))
        ax.set_xlim(-1.03, 1.03)
        ax.set_ylim(-1.03, 1.03)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_embedding(embedding: np.ndarray, labels, *, ax=None, title: str = "", s: float = 3.0,
                   colors: Mapping[str, str] | None = None, legend: bool = True):
    """Scatter of the embedding coloured by class (Fig. 7b, 7g); NaN labels in light grey. Returns the Figure."""
    fig, ax = _new_ax(ax)
    emb = np.asarray(embedding, dtype=float)
    lab = pd.Series(labels, dtype=object).reset_index(drop=True)
    classes = _ordered_classes(lab)
    colors = {**_class_colors(classes), **(colors or {})}
    missing = lab.isna().to_numpy()
    if missing.any():
        ax.scatter(emb[missing, 0], emb[missing, 1], s=s, c="0.85", lw=0, label="unmatched", rasterized=True)
    for c in classes:
        m = (lab == c).to_numpy()
        ax.scatter(emb[m, 0], emb[m, 1], s=s, color=colors[c], lw=0, label=f"{c} ({m.sum()})", rasterized=True)
    _disk(ax, emb)
    if legend:
        ax.legend(markerscale=4, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig


def plot_tree_overlay(tree, X, embedding: np.ndarray, *, highlight: Mapping[str, int] | None = None,
                      labels=None, ax=None, title: str = "", s: float = 2.0):
    """The tree drawn on the embedding (Fig. 7e, S15a/c).

    Each node sits at the mean embedding of the nuclei passing through it; every parent -> child edge is a
    light grey line. ``highlight`` (class -> node, e.g. from :func:`best_nodes`) draws the path root -> node in
    black and marks the node in the class colour. ``labels`` colours the background nuclei (faint).
    """
    fig, ax = _new_ax(ax)
    emb = np.asarray(embedding, dtype=float)
    if labels is not None:
        lab = pd.Series(labels, dtype=object).reset_index(drop=True)
        cmap = _class_colors(_ordered_classes(lab))
        col = [cmap.get(v, "0.85") if isinstance(v, str) else "0.85" for v in lab]
        ax.scatter(emb[:, 0], emb[:, 1], s=s, c=col, lw=0, alpha=0.25, rasterized=True)
    else:
        ax.scatter(emb[:, 0], emb[:, 1], s=s, c="0.85", lw=0, rasterized=True)
    pos = node_embedding_means(tree, X, emb)
    t = tree.tree_
    for a in range(t.node_count):
        for c in (t.children_left[a], t.children_right[a]):
            if c != -1 and np.all(np.isfinite(pos[[a, c]])):
                ax.plot(pos[[a, c], 0], pos[[a, c], 1], color="0.55", lw=0.5, zorder=2)
    ax.scatter(pos[:, 0], pos[:, 1], s=4, c="0.45", zorder=3)
    if highlight:
        cmap = _class_colors(list(highlight))
        for cls, node in highlight.items():
            path = decision_path(tree, int(node)).nodes
            ax.plot(pos[path, 0], pos[path, 1], color="k", lw=1.6, zorder=4)
            ax.scatter(pos[node, 0], pos[node, 1], s=70, c=cmap[cls], edgecolors="k", zorder=5, label=cls)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _disk(ax, emb)
    ax.set_title(title)
    return fig


def plot_node_members(tree, X, embedding: np.ndarray, nodes: Mapping[str, int], *, ax=None, title: str = "",
                      s: float = 3.0):
    """Nuclei that pass through each selected node, coloured by the node's class (Fig. 7f, S15b/d)."""
    fig, ax = _new_ax(ax)
    emb = np.asarray(embedding, dtype=float)
    ax.scatter(emb[:, 0], emb[:, 1], s=s, c="0.88", lw=0, rasterized=True)
    cmap = _class_colors(list(nodes))
    for cls, node in nodes.items():
        m = node_members(tree, X, int(node))
        ax.scatter(emb[m, 0], emb[m, 1], s=s, c=cmap[cls], lw=0, label=f"{cls}: node {node} ({m.sum()})",
                   rasterized=True)
    _disk(ax, emb)
    ax.legend(markerscale=4, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig


def plot_step_by_step(tree, X, embedding: np.ndarray, node: int, predicted_classes, cls: str, *,
                      mark: Mapping[str, int] | None = None, ncols: int = 4, units: str = "physical",
                      s: float = 2.0, panel_size: float = 3.0):
    """Fig. S14: one panel per node on the path root -> ``node``.

    Panel ``k`` shows all nuclei in light grey and the nuclei that satisfy the first ``k`` rules, coloured by
    the class colour when the model predicted ``cls`` and dark grey otherwise; the title gives the added rule
    and the node's size, precision, recall and F1 for ``cls``. ``mark`` (name -> node, e.g. ``{'representative':
    n1, 'discriminative': n2}``) labels those panels.
    """
    import matplotlib.pyplot as plt

    path = decision_path(tree, node, units=units)
    emb = np.asarray(embedding, dtype=float)
    y = np.asarray(predicted_classes, dtype=object).ravel()
    is_c = y == cls
    P, rows = _membership(tree, X)
    members_all = np.zeros((len(rows), len(path.nodes)), dtype=bool)
    members_all[np.flatnonzero(rows)] = np.asarray(P[:, path.nodes].todense()) > 0
    n_pos = int(is_c[rows].sum())
    color = _class_colors([cls])[cls]
    names = {int(v): k for k, v in (mark or {}).items()}
    n = len(path.nodes)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, min(ncols, n), figsize=(panel_size * min(ncols, n), panel_size * nrows + 0.4),
                             squeeze=False)
    for k, nd in enumerate(path.nodes):
        ax = axes.flat[k]
        m = members_all[:, k]
        tp = int((m & is_c).sum())
        size = int(m.sum())
        prec = tp / size if size else np.nan
        rec = tp / n_pos if n_pos else np.nan
        f1 = f1_from_counts(tp, size - tp, n_pos - tp, empty=np.nan)
        ax.scatter(emb[:, 0], emb[:, 1], s=s, c="0.9", lw=0, rasterized=True)
        ax.scatter(emb[m & ~is_c, 0], emb[m & ~is_c, 1], s=s, c="0.35", lw=0, rasterized=True)
        ax.scatter(emb[m & is_c, 0], emb[m & is_c, 1], s=s, c=color, lw=0, rasterized=True)
        _disk(ax, emb)
        rule = "all nuclei" if k == 0 else path.rules[k - 1].format(units)
        tag = f" [{names[nd]}]" if nd in names else ""
        ax.set_title(f"{k}. {rule}{tag}\nn={size}  P={prec:.2f}  R={rec:.2f}  F1={f1:.2f}", fontsize=7)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(f"DTALE path to node {node} for {cls}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_simplified_tree(tree, nodes: Mapping[str, int] | None = None, *, feature_names=None, stats=None,
                         max_depth: int = 3, units: str = "physical", ax=None, title: str = ""):
    """A readable tree (Fig. 7d).

    With ``nodes`` (label -> node, e.g. ``{'lymphocyte (F1)': 12, 'lymphocyte (P)': 40}``) only the union of the
    paths root -> those nodes is drawn: each edge carries its rule, each selected node its label(s) and, given
    ``stats`` (:func:`node_statistics`) and labels that start with a class name, that class's precision and
    F1. Without ``nodes``, scikit-learn's ``plot_tree`` limited to ``max_depth``.
    """

    if nodes is None:
        from sklearn.tree import plot_tree

        fig, ax = _new_ax(ax, figsize=(14, 6))
        names = list(feature_names) if feature_names is not None else getattr(tree, "dtale_feature_names_", None)
        plot_tree(tree, max_depth=max_depth, feature_names=[short_name(f) for f in names] if names else None,
                  ax=ax, fontsize=6, impurity=False, filled=False)
        ax.set_title(title)
        return fig
    t = tree.tree_
    paths = {lbl: decision_path(tree, int(nd), feature_names, units=units) for lbl, nd in nodes.items()}
    keep = sorted({v for p in paths.values() for v in p.nodes})
    children = {v: [c for c in (t.children_left[v], t.children_right[v]) if c in keep] for v in keep}
    xpos: dict[int, float] = {}
    counter = [0]

    def layout(v):  # leaves of the pruned tree left to right, parents centred over their children
        if not children[v]:
            xpos[v] = counter[0]
            counter[0] += 1
        else:
            for c in children[v]:
                layout(c)
            xpos[v] = float(np.mean([xpos[c] for c in children[v]]))

    layout(0)
    _, depth = _parents_depths(tree)
    width = max(counter[0], 1)
    fig, ax = _new_ax(ax, figsize=(max(6.0, 2.8 * width), 1.2 + 1.1 * (max(depth[keep]) + 1)))
    names = list(feature_names) if feature_names is not None else (
        getattr(tree, "dtale_feature_names_", None) or [f"f{j}" for j in range(t.n_features)])
    for v in keep:
        for c in children[v]:
            ax.plot([xpos[v], xpos[c]], [-depth[v], -depth[c]], color="0.5", lw=1, zorder=1)
            op = "<=" if c == t.children_left[v] else ">"
            r = Rule(names[t.feature[v]], op, float(t.threshold[v])).format(units)
            r = r.replace(f" {op} ", f"\n{op} ", 1)  # feature on one line, bound on the next
            f = 0.7  # along the edge, so that sibling labels do not collide
            ax.text(xpos[v] + f * (xpos[c] - xpos[v]), -depth[v] - f * (depth[c] - depth[v]), r, fontsize=6,
                    ha="center", va="center", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"),
                    zorder=2)
    by_node: dict[int, list[str]] = {}
    for lbl, nd in nodes.items():
        by_node.setdefault(int(nd), []).append(lbl)
    cmap = _class_colors(_ordered_classes([str(lbl).split(" ")[0] for lbl in nodes]))
    for v in keep:
        lbls = by_node.get(v, [])
        fc = cmap.get(str(lbls[0]).split(" ")[0], "0.7") if lbls else "0.8"
        ax.scatter([xpos[v]], [-depth[v]], s=60 if lbls else 15, c=fc, edgecolors="k", zorder=3)
        if lbls:
            lines = []
            for lbl in lbls:
                txt = str(lbl)
                if stats is not None:
                    cls = str(lbl).split(" ")[0]
                    row = stats[(stats["node"] == v) & (stats["class"] == cls)]
                    if len(row):
                        txt += f"\nP={row['precision'].iloc[0]:.2f} F1={row['f1'].iloc[0]:.2f}"
                lines.append(txt)
            ax.text(xpos[v], -depth[v] - 0.22, "\n".join(lines), fontsize=6, ha="center", va="top", zorder=4)
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-max(depth[keep]) - 1.0, 0.4)
    ax.axis("off")
    ax.set_title(title)
    return fig
