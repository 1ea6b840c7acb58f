"""Inputs of notebooks 05 and 06: the single-rater datasets, the hospital folds, and the P-truth test set.

* Single-rater data: in synthetic mode, the corrected and uncorrected datasets simulated by notebook 02
  (``results/<dataset>/02_suggestions/study/singlerater/``); with the real release, ``data_dir`` is the corrected
  dataset, and an uncorrected one is used when ``data_dir`` has ``corrected/`` and ``uncorrected/`` sub-folders.
* Folds: notebook 01's fold assignment (:func:`nucls_utils.io.load_fold_assignment`: slide -> hospital fold).
* P-truth (Table 1, bottom half): notebook 03's EM truth of the E set (raw P-truth labels, anchor boxes), on the
  multi-rater FOV images, cropped to the FOV rectangle when the single-rater data knows it. As in the reference,
  anchors with a side >= 125 px and FOVs smaller than 100 px are dropped; anchors the Ps call "undetected" are not
  nuclei. The P-truth has boxes only here (no traced boundaries), so it has no segmentation scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import taxonomy as tx
from ..io.dataset import read_dataset, read_fov_locations
from ..io.folds import load_fold_assignment
from ..io.naming import hospital_of, parse_fov_name
from .data import FovSample, load_fov_samples, macenko_normalise

__all__ = ["locate_singlerater", "load_singlerater", "load_ptruth_samples",
           "MAX_ANCHOR_SIDE_PX", "MIN_FOV_SIDE_PX", "ModelInputs", "load_model_inputs"]

MAX_ANCHOR_SIDE_PX = 125
MIN_FOV_SIDE_PX = 100


def locate_singlerater(data_mode: str, data_path: str | os.PathLike[str] | None, results_dir: str | os.PathLike[str],
                       dataset_name: str) -> dict[str, Path]:
    """``{'corrected': path[, 'uncorrected': path]}`` of the single-rater data of a run."""
    if data_mode == "synthetic":
        root = Path(results_dir) / dataset_name / "02_suggestions" / "study" / "singlerater"
        if not (root / "corrected" / "csv").is_dir():
            raise FileNotFoundError(f"no simulated single-rater data at {root}: run notebook 02 first "
                                    "(./run_all.sh --only 02 with the same --profile, --seed and --out)")
        return {v: root / v for v in ("corrected", "uncorrected") if (root / v / "csv").is_dir()}
    if data_path is None:
        raise FileNotFoundError("no data_dir given")
    root = Path(data_path)
    if (root / "corrected" / "csv").is_dir():
        return {v: root / v for v in ("corrected", "uncorrected") if (root / v / "csv").is_dir()}
    if not (root / "csv").is_dir():
        raise FileNotFoundError(f"{root} is not a single-rater dataset (no csv/ folder)")
    return {"corrected": root}


def load_singlerater(paths: dict[str, Path], *, normalise: bool = True, progress: bool = True
                     ) -> dict[str, list[FovSample]]:
    """FOV samples of each single-rater variant, Macenko-normalised when ``normalise`` (as the paper trained)."""
    norm = macenko_normalise if normalise else None
    return {k: load_fov_samples(read_dataset(p), normalise=norm, progress=progress) for k, p in paths.items()}


def load_ptruth_samples(truth: pd.DataFrame, rgb_dir: str | os.PathLike[str], *,
                        fov_locations: str | os.PathLike[str] | None = None, normalise: bool = True,
                        source: str = "the truth table") -> list[FovSample]:
    """The P-truth of one multi-rater set as :class:`FovSample` objects (boxes only, ``ismask`` False).

    Parameters
    ----------
    truth : one set's truth table as notebook 03 stored it (``TruthTables.truth[set]`` of
        :func:`nucls_utils.interrater.analysis.read_truth_tables`: one row per anchor, ``EM_inferred_label_Ps`` the
        raw P-truth).
    rgb_dir : the set's ``rgb/`` folder (``<fovname>.png``).
    fov_locations : optional ``ALL_FOV_LOCATIONS.csv`` giving the FOV rectangle inside each RGB.
    source : what to call the table in an error message (its file).
    """
    from PIL import Image

    need = {"fovname", "xmin", "ymin", "xmax", "ymax", "EM_inferred_label_Ps"}
    missing = need - set(truth.columns)
    if missing:
        raise ValueError(f"{source}: missing column(s) {sorted(missing)}")
    rects = read_fov_locations(fov_locations) if fov_locations and Path(fov_locations).is_file() else {}
    out = []
    for fov, rows in truth.groupby("fovname", sort=True):
        path = Path(rgb_dir) / f"{fov}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{source}: FOV {fov} has no image {path}")
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        if normalise:
            rgb = macenko_normalise(rgb)
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = rects.get(fov, (0, 0, w, h))
        x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
        if min(x1 - x0, y1 - y0) < MIN_FOV_SIDE_PX:
            continue
        # anchors without a P-truth (not in the EM population) or that the Ps call "undetected" are no nuclei
        rows = rows[rows["EM_inferred_label_Ps"].notna() & (rows["EM_inferred_label_Ps"] != "undetected")]
        b = rows[["xmin", "ymin", "xmax", "ymax"]].to_numpy(float) - [x0, y0, x0, y0]
        b = np.clip(b, 0, [x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        side_w, side_h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        keep = (side_w > 8) & (side_h > 8) & (side_w < MAX_ANCHOR_SIDE_PX) & (side_h < MAX_ANCHOR_SIDE_PX)
        boxes = b[keep].astype(np.int32)
        classes = np.array([tx.to_main(c) for c in rows.loc[keep, "EM_inferred_label_Ps"]], dtype=object)
        slide = parse_fov_name(fov).slide
        out.append(FovSample(name=fov, hospital=hospital_of(slide), slide=slide,
                             rgb=np.ascontiguousarray(rgb[y0:y1, x0:x1]), boxes=boxes, classes=classes,
                             ismask=np.zeros(len(boxes), dtype=bool),
                             masks=[np.ones((bb[3] - bb[1], bb[2] - bb[0]), dtype=bool) for bb in boxes],
                             origin=(int(x0), int(y0))))
    return out


@dataclass
class ModelInputs:
    """Everything notebooks 05 and 06 read (see the module docstring)."""

    samples: dict[str, list[FovSample]]  # 'corrected' [, 'uncorrected']
    assignment: pd.DataFrame
    ptruth: list[FovSample] | None  # E set P-truth, or None without multi-rater data
    generator: list[FovSample] | None  # synthetic mode: the generator's exact nuclei
    notes: list[str] = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        """FOVs and nuclei per fold and data set."""
        fold_of = dict(zip(self.assignment["slide_name"], self.assignment["fold"], strict=True))
        rows = []
        sets = {**self.samples, **({"P-truth (E)": self.ptruth} if self.ptruth else {}),
                **({"generator": self.generator} if self.generator else {})}
        for name, samples in sets.items():
            for s in samples:
                amb = int(sum(c == tx.AMBIGUOUS for c in s.classes))
                rows.append({"data": name, "fold": fold_of.get(s.slide), "hospital": s.hospital, "fovs": 1,
                             "nuclei": len(s) - amb, "ambiguous": amb, "boundaries": int(np.sum(s.ismask))})
        df = pd.DataFrame(rows)
        return df.groupby(["data", "fold"]).agg(hospitals=("hospital", lambda h: ",".join(sorted(set(h)))),
                                                fovs=("fovs", "sum"), nuclei=("nuclei", "sum"),
                                                ambiguous=("ambiguous", "sum"),
                                                boundaries=("boundaries", "sum")).reset_index()


def load_model_inputs(ctx, *, normalise: bool = True, evalset: str = "E", progress: bool = True) -> ModelInputs:
    """Load the inputs of notebooks 05/06 for a run context (:func:`nucls_utils.config.start_run`)."""
    from ..interrater.analysis import STAGE as AGREEMENT_STAGE
    from ..interrater.analysis import locate_multirater, read_truth_tables

    notes = []
    paths = locate_singlerater(ctx.data.mode, ctx.data.path, ctx.results_dir, ctx.data.name)
    if "uncorrected" not in paths:
        notes.append("no uncorrected single-rater data: Table S6 cannot be computed")
    samples = load_singlerater(paths, normalise=normalise, progress=progress)
    assignment = load_fold_assignment(ctx.results_dir, ctx.data.name)
    ptruth = None
    agreement = ctx.results_dir / ctx.data.name / AGREEMENT_STAGE
    tt = read_truth_tables(agreement)
    study = locate_multirater(ctx.data.mode, ctx.data.path, ctx.results_dir, ctx.data.name)
    rgb_dir = None if study is None else next((p for p in (study / "multirater" / evalset / "rgb",
                                                           study / evalset / "rgb") if p.is_dir()), None)
    if tt is not None and evalset in tt.truth and rgb_dir is not None:
        ptruth = load_ptruth_samples(tt.truth[evalset], rgb_dir,
                                     fov_locations=paths["corrected"] / "ALL_FOV_LOCATIONS.csv", normalise=normalise,
                                     source=f"{AGREEMENT_STAGE}/truth_{evalset}.csv")
    else:
        notes.append(f"no P-truth for the {evalset} set (needs notebook 03's truth tables and the set's "
                     "images): the bottom half of Table 1 cannot be computed")
    generator = None
    if ctx.data.mode == "synthetic":
        generator = load_fov_samples(read_dataset(ctx.data.path), normalise=None, progress=False)
        # the generator's truth is scored on the same (normalised) predictions; only its geometry and classes count
    return ModelInputs(samples, assignment, ptruth, generator, notes)
