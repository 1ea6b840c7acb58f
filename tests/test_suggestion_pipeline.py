"""Refinement model, Table S2 metrics, stratified FOV sampling and the written annotation study (smoke scale)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import matthews_corrcoef

from nucls_utils import io as nio
from nucls_utils.crowd import make_roster, write_annotation_study
from nucls_utils.phantom import REGION_NAMES, fov_region_map
from nucls_utils.suggestions import (
    RefinerConfig,
    bootstrap_suggestions,
    build_refiner,
    fov_sampling_features,
    refine_fov,
    stratified_fov_sample,
    suggestion_table,
    train_refiner,
)


@pytest.fixture(scope="module")
def cohort(smoke_cohort):
    root = smoke_cohort
    records = nio.read_dataset(root)
    images = [r.read_rgb() for r in records]
    boot = [bootstrap_suggestions(im, fov_region_map(root, r.name), REGION_NAMES)
            for im, r in zip(images, records, strict=True)]
    return root, records, images, boot


def test_refiner_trains_and_predicts_on_any_size(cohort):
    _, records, images, boot = cohort
    torch.manual_seed(0)
    model = build_refiner()
    hist = train_refiner(model, images, boot, RefinerConfig(iterations=2, batch_size=2), seed=0, progress=False)
    assert list(hist["iteration"]) == [1, 2] and np.isfinite(hist["loss"]).all()
    assert {"loss_classifier", "loss_mask", "loss_objectness"} <= set(hist.columns)
    nuclei, conf = refine_fov(model, images[0], score_threshold=0.0)
    assert len(nuclei) == len(conf) and all(0 <= c <= 1 for c in conf)
    h, w = images[0].shape[:2]
    assert all(0 <= n.xmin and n.xmax <= w + 1 and 0 <= n.ymin and n.ymax <= h + 1 for n in nuclei)
    # an odd-sized image is not resized: boxes stay within it
    odd = images[1][:201, :333]
    nuclei, _ = refine_fov(model, odd, score_threshold=0.0)
    assert all(n.xmax <= 334 and n.ymax <= 202 for n in nuclei)


def test_refiner_trains_with_class_balanced_crops(cohort):
    _, _, images, boot = cohort
    cfg = RefinerConfig(iterations=2, batch_size=2, class_balance=1.0)
    hist = train_refiner(build_refiner(seed=0), images, boot, cfg, seed=0, progress=False)
    again = train_refiner(build_refiner(seed=0), images, boot, cfg, seed=0, progress=False)
    assert np.isfinite(hist["loss"]).all()
    assert hist["loss"].tolist() == again["loss"].tolist()  # seeded: the balanced draws repeat


def test_suggestion_table_against_direct_computation():
    t = [[nio.Nucleus.from_box("tumor", 0, 0, 20, 20), nio.Nucleus.from_box("lymphocyte", 40, 40, 55, 55),
          nio.Nucleus.from_box("fibroblast", 70, 0, 90, 10), nio.Nucleus.from_box("unlabeled", 0, 60, 10, 70)]]
    p = [[nio.Nucleus.from_box("tumor", 1, 0, 20, 21), nio.Nucleus.from_box("plasma_cell", 40, 41, 55, 55),
          nio.Nucleus.from_box("lymphocyte", 70, 0, 91, 10), nio.Nucleus.from_box("tumor", 100, 100, 120, 120),
          nio.Nucleus.from_box("tumor", 0, 60, 10, 70)]]
    row = suggestion_table(t, {"x": p}).iloc[0]
    assert row["detection_N"] == 4 and row["precision"] == 80 and row["recall"] == 100
    # classification over matched non-ambiguous pairs, super-classes: tumor/tumor, sTIL/sTIL, stromal/sTIL
    truth, pred = ["tumor_any", "sTIL", "nonTIL_stromal"], ["tumor_any", "sTIL", "sTIL"]
    assert row["classification_N"] == 3
    assert row["accuracy"] == pytest.approx(200 / 3)
    assert row["MCC"] == pytest.approx(100 * matthews_corrcoef(truth, pred))
    assert row["recall_sTIL"] == 100


def test_stratified_sampling_fills_every_stratum():
    rng = np.random.default_rng(0)
    feats = pd.DataFrame({"n_suggestions": rng.integers(3, 60, 200), "ratio_predominant": rng.random(200),
                          "ratio_second": rng.random(200) / 2, "n_discordant": rng.integers(0, 10, 200),
                          "n_low_confidence": rng.integers(0, 10, 200), "n_extreme": rng.integers(0, 5, 200)})
    chosen = stratified_fov_sample(feats, 36, np.random.default_rng(1))
    assert len(chosen) == 36 and chosen.index.is_unique
    counts = chosen["stratum"].value_counts().to_dict()
    assert counts["single_class"] == counts["two_class"] == counts["discordance"] == 6
    assert counts["low_confidence"] + counts["extreme_size"] == 18
    top = feats[feats["n_suggestions"] >= 5]["ratio_predominant"].nlargest(6)
    assert set(chosen[chosen["stratum"] == "single_class"].index) == set(top.index)
    assert (chosen["n_suggestions"] >= 5).all()


def test_annotation_study_is_written_and_reads_back(cohort, tmp_path):
    root, records, images, boot = cohort
    rng = np.random.default_rng(4)
    refined = boot  # the study machinery does not care where suggestions come from
    conf = [[0.9] * len(b) for b in boot]
    feats = fov_sampling_features(refined, conf, boot)
    sample = stratified_fov_sample(feats, 6, rng, min_nuclei=1)
    roster = make_roster(rng, 2, 2, 18)
    m = write_annotation_study(tmp_path / "study", records, boot, refined, conf, sample, roster, rng, seed=4,
                               nps_per_fov=(16, 18))
    out = tmp_path / "study"
    assert json.loads((out / "manifest.json").read_text()) == m
    assert len(nio.read_dataset(out / "singlerater" / "corrected")) == len(records)
    assert len(nio.read_dataset(out / "suggestions" / "refined")) == len(records)
    mr = nio.read_multirater(out / "multirater")
    assert {k[0] for k in mr} == {"U-control", "B-control", "E"}
    assert len({k[2] for k in mr}) == 6
    assert m["multirater"]["annotations"] == sum(len(v) for v in mr.values())
    # U-control had no suggestions, so nobody could click a boundary there
    assert all(n.type == "rectangle" for (s, _, _), v in mr.items() if s == "U-control" for n in v)
    assert pd.read_csv(out / "participants.csv")["group"].value_counts().to_dict() == {"NP": 18, "SP": 2, "JP": 2}


def test_dataset_runner_and_figures(cohort, tmp_path):
    from nucls_utils import figures
    from nucls_utils.phantom import REGION_COLORS
    from nucls_utils.plots import suggestions as plotting
    from nucls_utils.suggestions import bootstrap_dataset, per_fov_scores

    root, records, images, boot = cohort
    assert bootstrap_dataset(records[:3], root, progress=False) == boot[:3]
    rows = [{"rgb": images[i], "regions": fov_region_map(root, records[i].name), "bootstrap": boot[i],
             "refined": boot[i], "truth": list(records[i].nuclei), "title": records[i].name[:16]} for i in (0, 1)]
    fig = plotting.plot_suggestion_examples(rows, REGION_COLORS)
    assert figures.save_figure(fig, "figS2_test", tmp_path)[0].stat().st_size > 10_000
    scores = per_fov_scores([r.nuclei for r in records], boot)
    assert len(scores) == len(records) and scores["F1"].between(0, 100).all()
    fig = plotting.plot_per_fov_comparison(scores["F1"], scores["F1"] * 0.9, "a", "b", "detection F1")
    assert "better in 0 %" in fig.axes[0].get_title()
    hist = pd.DataFrame({"iteration": [1, 2, 3], "loss": [3.0, 2.0, 1.0], "loss_mask": [0.7, 0.6, 0.5]})
    assert len(plotting.plot_training_loss(hist).axes[0].lines) == 2
