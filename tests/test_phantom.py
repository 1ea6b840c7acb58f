"""The synthetic cohort: calibrated to the real data, deterministic, and in the official layout."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nucls_utils import io as nio
from nucls_utils import taxonomy as tx
from nucls_utils.phantom import calibration, cohort, layout, morphology
from nucls_utils.stains import stain_densities


@pytest.fixture(scope="session")
def cpu_cohort(tmp_path_factory) -> Path:
    return cohort.generate_cohort(tmp_path_factory.mktemp("syn") / "cpu", "cpu", 0, progress=False)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- calibration -----------------------------------------------------------------------------------------------
def test_calibration_constants_match_the_real_metadata(metadata_path):
    derived = calibration.derive_calibration(metadata_path)
    assert derived["class_box_stats"] == calibration.CLASS_BOX_STATS
    assert derived["nuclei_per_fov"] == calibration.NUCLEI_PER_FOV
    assert derived["fov_rect_side_px"] == calibration.FOV_RECT_SIDE_PX
    assert derived["polyline_share"] == calibration.POLYLINE_SHARE
    assert derived["neighbour_overlap_share"] == calibration.NEIGHBOUR_OVERLAP_SHARE
    assert derived["hospital_slide_counts"] == calibration.HOSPITAL_SLIDE_COUNTS


def test_neighbour_overlap_share_counts_boxes_within_their_fov():
    # FOV a: two boxes with IOU 1/3 (both count at 0.1 and 0.2, not at 0.4); one far away. FOV b: the same box as
    # a's first, alone in its FOV (overlaps nothing: FOVs are not compared)
    ann = pd.DataFrame({"fovname": ["a", "a", "a", "b"], "xmin": [0, 5, 100, 0], "ymin": [0, 0, 100, 0],
                        "xmax": [10, 15, 110, 10], "ymax": [10, 10, 110, 10]})
    assert calibration.neighbour_overlap_share(ann, (0.1, 0.2, 0.4)) == {0.1: 0.5, 0.2: 0.5, 0.4: 0.0}


def test_cpu_cohort_matches_the_real_core_set(cpu_cohort, metadata_path):
    real_fovs, real = nio.read_core_metadata(metadata_path, drop_duplicate_fovs=True)
    real = real[real["type"] != "point"]
    syn = nio.annotations_frame(nio.read_dataset(cpu_cohort))
    for cls in ("tumor", "fibroblast", "lymphocyte", "plasma_cell", "macrophage"):
        r, s = real[real["raw_class"] == cls], syn[syn["raw_class"] == cls]
        for dim in ("width", "height"):
            rel = abs(s[dim].median() / r[dim].median() - 1)
            assert rel <= 0.15, f"{cls} median box {dim}: synthetic {s[dim].median()} vs real {r[dim].median()}"
    p_real = real["raw_class"].value_counts(normalize=True)
    p_syn = syn["raw_class"].value_counts(normalize=True).reindex(p_real.index, fill_value=0)
    assert (100 * (p_syn - p_real).abs()).max() <= 5.0, (100 * (p_syn - p_real)).round(1).to_dict()
    per_real = real.groupby("fovname").size().reindex(real_fovs["fovname"], fill_value=0).mean()
    per_syn = syn.groupby("fovname").size().mean()
    assert abs(per_syn / per_real - 1) <= 0.20, (per_syn, per_real)
    # nuclei are about as crowded as the real annotated ones (generator 2.4: 11.5 % of boxes overlapped a neighbour
    # by IOU > 0.2, five times the real 2.1 %, so NMS at 0.2 suppressed true nuclei)
    overlap = calibration.neighbour_overlap_share(syn)
    for t in (0.1, 0.2, 0.3):
        assert 0.5 <= overlap[t] / calibration.NEIGHBOUR_OVERLAP_SHARE[t] <= 2.0, (t, overlap)


def test_stain_densities_fall_within_the_real_range(cpu_cohort, sample_dir):
    real = pd.DataFrame([stain_densities(r.read_rgb()) for r in nio.read_dataset(sample_dir)])
    syn = pd.DataFrame([stain_densities(r.read_rgb()) for r in nio.read_dataset(cpu_cohort)])
    assert len(syn) == 120
    for col in ("h_mean", "e_mean"):
        lo, hi = real[col].min(), real[col].max()
        # 120 draws from the distribution of 17 real FOVs would put about 2/18 (11 %) of them outside the 17's
        # range by chance; allow 5 %
        outside = syn[(syn[col] < lo) | (syn[col] > hi)]
        assert len(outside) <= 0.05 * len(syn), (f"{col}: {len(outside)} synthetic FOVs outside the real range "
                                                  f"[{lo:.1f}, {hi:.1f}]")
        # and the synthetic cohort spreads over the range, as hospitals and slides differ (generator 2.5, with 7 %
        # fewer nuclei than 2.4 after the crowding fit, hematoxylin spreads over 46 % of the real range)
        assert syn[col].max() - syn[col].min() > 0.4 * (hi - lo)


# -- structure -------------------------------------------------------------------------------------------------
def test_cohort_structure_and_layout(cpu_cohort):
    records = nio.read_dataset(cpu_cohort)  # validates every row, image and mask
    ann, fovs = nio.annotations_frame(records), nio.fovs_frame(records)
    assert fovs["hospital"].nunique() == 8 and fovs["slide_name"].nunique() == 30 and len(records) == 120
    # annotators draw boxes for most nuclei and trace a third (the core set's polyline share)
    share = np.mean([n.type == "polyline" for r in records for n in r.nuclei])
    assert abs(share - calibration.POLYLINE_SHARE) < 0.05, share
    assert set(ann["raw_class"]) == set(tx.RAW_CLASSES), set(tx.RAW_CLASSES) - set(ann["raw_class"])
    for r in records:
        h, w = r.image_shape
        x0, y0, x1, y1 = r.fov_rect
        assert 300 <= x1 - x0 <= 340 and 300 <= y1 - y0 <= 340
        assert 0 <= x0 and x1 <= w <= x1 + 45 and 0 <= y0 and y1 <= h <= y1 + 45
        assert r.slide.split("-")[1] == r.hospital
    # the paper's folds do not apply; the generic by-hospital K-fold gives 5 folds
    assert nio.hospital_kfold(fovs["slide_name"].unique(), 5, seed=0)["fold"].nunique() == 5
    truth = pd.read_csv(cpu_cohort / "truth" / "nuclei.csv")
    assert len(truth) == len(ann)
    joined = ann.merge(truth, on=["fovname", "nucleus_index"], suffixes=("", "_truth"), validate="1:1")
    assert (joined["raw_class"] == joined["raw_class_truth"]).all()
    np.testing.assert_allclose(joined["area_px"], joined["area_px_truth"])
    m = cohort.read_manifest(cpu_cohort)
    assert m["generator_version"] == cohort.GENERATOR_VERSION and m["counts"]["fovs"] == 120
    assert m["counts"]["nuclei"] == len(ann)
    assert sum(m["counts"]["nuclei_by_raw_class"].values()) == len(ann)
    regions = sorted((cpu_cohort / "regions").glob("*.png"))
    assert len(regions) == 60  # 30 slides x 2 ROIs
    from PIL import Image

    codes = np.unique(np.asarray(Image.open(regions[0])))
    assert set(codes) <= set(layout.REGION_CODES.values())
    # each FOV's crop of its ROI map has the FOV's size, and its nuclei sit in the regions the truth table says
    from nucls_utils.phantom import fov_region_map

    for r in records[:10]:
        rmap = fov_region_map(cpu_cohort, r.name)
        assert rmap.shape == r.image_shape
        t = truth[truth["fovname"] == r.name]
        at = rmap[np.clip(t["center_y"].astype(int), 0, rmap.shape[0] - 1),
                  np.clip(t["center_x"].astype(int), 0, rmap.shape[1] - 1)]
        expected = t["region"].map(layout.REGION_CODES).to_numpy()
        assert (at == expected).mean() > 0.9  # centres on a region border may round into the neighbour


def test_region_decides_the_mix(cpu_cohort):
    truth = pd.read_csv(cpu_cohort / "truth" / "nuclei.csv")
    top = truth.groupby("region")["raw_class"].agg(lambda s: s.value_counts(normalize=True).index[0])
    assert top["tumor"] == "tumor" and top["stroma"] == "fibroblast"
    assert top["lymphocytic_infiltrate"] == "lymphocyte" and top["plasmacytic_infiltrate"] == "plasma_cell"
    share = truth.groupby("region")["raw_class"].value_counts(normalize=True)
    assert share["tumor"]["tumor"] > 0.75 and share["lymphocytic_infiltrate"]["lymphocyte"] > 0.6
    assert share["necrosis_debris"]["unlabeled"] > 0.4  # debris: mostly nuclei nobody could classify


def test_masks_agree_with_the_outlines_and_nuclei_touch(smoke_cohort):
    records = nio.read_dataset(smoke_cohort)
    overlapping = 0
    for r in records:
        codes, inst = r.read_mask()
        assert np.array_equal(inst, nio.rasterize_instances(r.nuclei, r.image_shape))
        x0, y0, x1, y1 = r.fov_rect
        assert (codes[y0:y1, x0:x1] > 0).all()  # nuclei or the FOV code inside the FOV
        # pixel overlap between different nuclei: touching and overlapping nuclei occur
        cover = np.zeros(r.image_shape, int)
        for n in r.nuclei:
            rr, cc = nio.nucleus_pixels(n, r.image_shape)
            cover[rr, cc] += 1
        overlapping += int((cover > 1).any())
    assert overlapping >= 3


def test_class_morphology():
    rng = np.random.default_rng(0)

    def aspect(cls):
        out = []
        for _ in range(200):
            _, _, info = morphology.sample_outline(morphology.KINDS[cls], rng)
            out.append(info["minor"] / info["major"])
        return np.mean(out)

    # spindles vs round cells (the real sample's thresholded fibroblasts are less eccentric than the v1 phantom's)
    assert aspect("fibroblast") < 0.5 < 0.8 < aspect("lymphocyte")
    sizes = {c: np.median([2 * morphology.sample_outline(morphology.KINDS[c], rng)[2]["radius"] for _ in range(200)])
             for c in ("tumor", "lymphocyte")}
    assert sizes["tumor"] > 1.5 * sizes["lymphocyte"]  # tumor nuclei are large, lymphocytes small


# -- determinism and caching -----------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files(smoke_cohort, tmp_path):
    again = cohort.generate_cohort(tmp_path / "again", "smoke", 0, progress=False)
    assert _hashes(again) == _hashes(smoke_cohort)
    other = cohort.generate_cohort(tmp_path / "other", "smoke", 1, progress=False)
    a, b = _hashes(smoke_cohort), _hashes(other)
    differing = [k for k in a if k.startswith(("rgb/", "csv/")) and a.get(k) != b.get(k)]
    assert len(differing) == len([k for k in a if k.startswith(("rgb/", "csv/"))])


def test_cache_is_reused_and_refreshed(smoke_cohort, tmp_path):
    root = tmp_path / "cache"
    _, made = cohort.ensure_cohort(root, "smoke", 0, progress=False)
    assert made and cohort.cohort_is_current(root, "smoke", 0)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    _, made = cohort.ensure_cohort(root, "smoke", 0, progress=False)
    assert not made and (root / "manifest.json").stat().st_mtime_ns == stamp
    _, made = cohort.ensure_cohort(root, "smoke", 3, progress=False)
    assert made and cohort.read_manifest(root)["seed"] == 3
    assert not cohort.cohort_is_current(root, "cpu", 3)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        cohort.generate_cohort("/nonexistent/x", "huge", 0)


# -- realism against the real sample (issue 14) -------------------------------------------------------------------
def test_cpu_cohort_realism_does_not_regress(cpu_cohort, sample_dir):
    """Feature C2ST, per-class SMDs and the heuristic's F1 gap of the cpu cohort against the 17 real FOVs.

    Issue 14's targets: C2ST <= 0.75, 80 % of |SMD| <= 0.5, an F1 gap <= 5. Generator 2.5 (seed 0): C2ST 0.749, 25 of
    28 |SMD| <= 0.5, bootstrap F1 48.6 vs 40.1 (gap 8.5: less crowded nuclei, fitted to the core set's box overlaps,
    are easier for the heuristic; README). Generator 2.4 (seed 0: 0.772, 26 of 28, 44.7 vs 40.1) met the last two and
    not the first. The C2ST bound is the 2.4 level plus slack, the SMD bound has one pair of slack (24 of 28) and the
    F1 bound is 2.5's gap plus 1.5. Generator 1.0 scored 0.97, 18 % and a 31.5-point gap; 2.3 scored 0.87, 23 of 28
    and a 3.4-point gap.
    """
    from nucls_utils.dtale import TABLE_S8_FEATURES
    from nucls_utils.phantom import realism

    syn_records, real_records = nio.read_dataset(cpu_cohort), nio.read_dataset(sample_dir)
    syn, real = realism.nucleus_table(syn_records), realism.nucleus_table(real_records)
    both, y, groups, _, _ = realism.matched_pairs(syn, real, seed=0)
    auroc = realism.c2st_auroc(both[list(TABLE_S8_FEATURES)].to_numpy(), y, groups)
    assert auroc <= 0.82, auroc
    smd = realism.smd_table(syn, real)
    assert len(smd) == 28 and (smd["smd"].abs() <= 0.5).sum() >= 24, smd
    f1_syn = realism.bootstrap_detection(syn_records)["F1"]
    f1_real = realism.bootstrap_detection(real_records)["F1"]
    assert abs(f1_syn - f1_real) <= 10, (f1_syn, f1_real)


def test_drawn_box_spread_recovers_planted_box_noise_and_reads_the_real_core_set(metadata_path):
    """Planted: true log sizes N(log 30, 0.2); polylines keep them, rectangles move each edge by a relative SD 0.1
    (the NPs' box jitter), which adds about 0.1 * sqrt(2) = 0.14 to the SD of log width: recovered within 0.02. On the
    real core set, drawn boxes of the four commonest classes are noisier than their boundaries' boxes, by an extra SD
    of 0.05-0.35 (as large as the NPs' jitter or larger: the simulated crowd's boxes are not too noisy)."""
    rng = np.random.default_rng(0)
    n = 20000
    w, h = 30 * np.exp(rng.normal(0, 0.2, (2, n)))
    d = rng.normal(0, 0.1, (4, n))
    ann = pd.DataFrame({"raw_class": "tumor", "type": np.where(np.arange(n) % 2, "rectangle", "polyline"),
                        "width": w, "height": h})
    rect = ann["type"] == "rectangle"
    ann.loc[rect, "width"] = (w * (1 + d[2] - d[0]))[rect]
    ann.loc[rect, "height"] = (h * (1 + d[3] - d[1]))[rect]
    planted = calibration.drawn_box_spread(ann).iloc[0]
    assert abs(planted["extra_log_sd"] - 0.1 * np.sqrt(2)) < 0.02, planted.to_dict()

    _, real = nio.read_core_metadata(metadata_path, drop_duplicate_fovs=True)
    spread = calibration.drawn_box_spread(real).set_index("raw_class")
    for cls in ("tumor", "lymphocyte", "fibroblast", "plasma_cell"):
        row = spread.loc[cls]
        assert row["log_width_sd_rectangle"] > row["log_width_sd_polyline"], (cls, row.to_dict())
        assert 0.05 <= row["extra_log_sd"] <= 0.35, (cls, row.to_dict())
