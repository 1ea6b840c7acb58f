"""DTALE step 1: the model's representations of its detections, and their hyperbolic UMAP embedding."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import taxonomy as tx
from ..evaluation import match_boxes
from .features import MIN_PIXELS, TABLE_S8_FEATURES, hematoxylin_channel, nuclei_features

__all__ = [
    "embed", "extract_representations", "hyperboloid_to_poincare", "representation_matrix",
]


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
    from ..model.inference import predict_fovs
    from ..progress import tqdm

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
