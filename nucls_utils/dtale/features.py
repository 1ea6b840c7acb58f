"""DTALE step 2 and Table S8: the 62 interpretable HistomicsTK features of each nucleus (hematoxylin channel,
one ``compute_nuclei_features`` call per FOV), their groups, short names and physical units."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import MICRONS_PER_PIXEL

__all__ = [
    "FEATURE_GROUPS", "MIN_PIXELS", "PHYSICAL_UNITS", "TABLE_S8_FEATURES",
    "extract_interpretable_features", "feature_group", "hematoxylin_channel", "nuclei_features",
    "short_name", "to_physical",
]


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


def hematoxylin_channel(rgb: np.ndarray, *, method: str = "macenko_pca") -> np.ndarray:
    """Hematoxylin intensity ``(H, W) float64`` in [0, 255] (higher = more hematoxylin), integer valued.

    ``255 - Stains[..., 0]`` of ``histomicstk...color_deconvolution_routine(rgb, stain_unmixing_method=method)``
    (the stain matrix is estimated from this image; HistomicsTK reorders the estimated stains so that channel 0
    is hematoxylin). Falls back to the fixed reference H&E matrix when the estimate fails or is not finite.
    """
    from histomicstk.preprocessing.color_deconvolution import color_deconvolution, color_deconvolution_routine

    from ..stains import stain_matrix

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
    from ..progress import tqdm

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
