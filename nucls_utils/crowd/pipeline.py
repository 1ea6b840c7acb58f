"""Run the whole simulated annotation study on a synthetic cohort and write its datasets.

Output folder (read by notebooks 03-06)::

    participants.csv                       the roster with each participant's planted reliability
    suggestions/{bootstrap,refined}/       suggestions in the single-rater layout (+ refined/confidence.csv)
    singlerater/{uncorrected,corrected}/   one NP per FOV, shown the refined suggestions; QC-corrected copy
    singlerater/assignment.csv             who annotated which FOV
    multirater/<set>/raw/csv/...           U-control, B-control, E on the sampled FOVs (see nucls_utils.io.multirater)
    multirater/fovs.csv                    the sampled FOVs and their sampling stratum
    manifest.json                          seed, counts, and the sha256 of every other file (``files``)

The manifest is written last, inside the temporary folder that is renamed onto ``out_dir``, by
:func:`nucls_utils.io.manifest.write_manifest`, so later notebooks can check the study with
:func:`nucls_utils.io.manifest.verify_manifest` before they reuse anything computed from it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..io.atomic import atomic_dir
from ..io.dataset import FovRecord, Nucleus, write_dataset
from ..io.manifest import write_manifest
from ..io.multirater import write_multirater
from .participants import Participant, roster_frame
from .study import EVALSETS, multi_rater_study, single_rater_study

__all__ = ["write_annotation_study"]


def _as_records(records: Sequence[FovRecord], nuclei: Sequence[Sequence[Nucleus]]) -> list[FovRecord]:
    return [FovRecord(r.name, r.image_shape, tuple(n), r.fov_rect, r.rgb_path) for r, n in
            zip(records, nuclei, strict=True)]


def write_annotation_study(out_dir: str | os.PathLike[str], records: Sequence[FovRecord],
                           bootstrap: Sequence[Sequence[Nucleus]], refined: Sequence[Sequence[Nucleus]],
                           confidences: Sequence[Sequence[float]], multirater_fovs: pd.DataFrame,
                           roster: Sequence[Participant], rng: np.random.Generator, *, seed: int,
                           nps_per_fov: tuple[int, int] = (10, 20), overwrite: bool = True,
                           refined_region_classes: Sequence[Sequence[str]] | None = None) -> dict:
    """Simulate the single- and multi-rater annotation of ``records`` and write everything to ``out_dir``.

    ``multirater_fovs`` has one row per multi-rater FOV, indexed by position in ``records`` (as returned by
    :func:`nucls_utils.suggestions.assess.stratified_fov_sample`). ``refined_region_classes``: per FOV, the class
    each refined suggestion inherits from its tissue region, shown beside the model's class in E and in the
    single-rater data, as in the paper (B-control's bootstrap classes are region-inherited already). Returns the
    manifest (with ``files``).
    """
    refined_by_name = {r.name: list(n) for r, n in zip(records, refined, strict=True)}
    boot_by_name = {r.name: list(n) for r, n in zip(records, bootstrap, strict=True)}
    region_by_name = None if refined_region_classes is None else {
        r.name: list(c) for r, c in zip(records, refined_region_classes, strict=True)}
    raw, fixed, assignment = single_rater_study(records, roster, rng, suggestions=refined_by_name,
                                                region_classes=region_by_name)
    mr_records = [records[i] for i in multirater_fovs.index]
    mr = multi_rater_study(mr_records, roster, rng, {"B-control": boot_by_name, "E": refined_by_name},
                           nps_per_fov=nps_per_fov,
                           region_classes=None if region_by_name is None else {"E": region_by_name})
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        roster_frame(roster).to_csv(tmp / "participants.csv", index=False)
        write_dataset(_as_records(records, bootstrap), tmp / "suggestions" / "bootstrap")
        write_dataset(_as_records(records, refined), tmp / "suggestions" / "refined")
        pd.DataFrame([(r.name, i, c) for r, cs in zip(records, confidences, strict=True) for i, c in enumerate(cs)],
                     columns=["fovname", "nucleus_index", "confidence"]).to_csv(
            tmp / "suggestions" / "refined" / "confidence.csv", index=False)
        write_dataset(raw, tmp / "singlerater" / "uncorrected")
        write_dataset(fixed, tmp / "singlerater" / "corrected")
        assignment.to_csv(tmp / "singlerater" / "assignment.csv", index=False)
        write_multirater(mr, tmp / "multirater", {r.name: r.rgb_path for r in mr_records}, overwrite=True)
        multirater_fovs.assign(fovname=[r.name for r in mr_records]).to_csv(tmp / "multirater" / "fovs.csv",
                                                                          index=False)
        manifest = {
            "seed": int(seed),
            "fovs": len(records),
            "participants": {g: int(sum(p.group == g for p in roster)) for g in ("SP", "JP", "NP")},
            "region_classes_shown": refined_region_classes is not None,
            "singlerater_annotations": {"uncorrected": sum(len(r.nuclei) for r in raw),
                                        "corrected": sum(len(r.nuclei) for r in fixed)},
            "multirater": {"fovs": len(mr_records), "evalsets": list(EVALSETS),
                           "annotations": sum(len(v) for v in mr.values()),
                           "participant_fov_pairs": len(mr)},
        }
        manifest = write_manifest(tmp, manifest)
    return manifest
