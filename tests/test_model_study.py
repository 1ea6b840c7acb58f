"""P-truth loading for Table 1's bottom half and the Table 1 assembly of notebook 06."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nucls_utils.model.report import table1
from nucls_utils.model.study import load_ptruth_samples

FOV = "TCGA-Y0-A000-DX1_id-abc_left-100_top-200_bottom-400_right-300"


def _truth(tmp_path):
    rgb = np.full((220, 220, 3), 230, np.uint8)
    (tmp_path / "rgb").mkdir()
    Image.fromarray(rgb).save(tmp_path / "rgb" / f"{FOV}.png")
    rows = [  # fovname, box, raw P-truth
        (10, 10, 40, 40, "tumor"), (50, 50, 70, 75, "lymphocyte"), (80, 80, 100, 100, "undetected"),
        (100, 100, 120, 118, None), (0, 0, 150, 150, "fibroblast"), (150, 150, 170, 170, "apoptotic_body"),
        (195, 195, 215, 215, "plasma_cell"),
    ]
    df = pd.DataFrame([{"fovname": FOV, "xmin": a, "ymin": b, "xmax": c, "ymax": d, "EM_inferred_label_Ps": lab}
                       for a, b, c, d, lab in rows])
    df.to_csv(tmp_path / "truth_E.csv", index=False)
    pd.DataFrame([{"fovname": FOV, "xmin": 5, "ymin": 5, "xmax": 205, "ymax": 205}]).to_csv(
        tmp_path / "ALL_FOV_LOCATIONS.csv", index=False)
    return tmp_path


def test_ptruth_drops_non_nuclei_and_oversized_anchors_and_crops_to_the_fov(tmp_path):
    root = _truth(tmp_path)
    (s,) = load_ptruth_samples(pd.read_csv(root / "truth_E.csv"), root / "rgb",
                               fov_locations=root / "ALL_FOV_LOCATIONS.csv", normalise=False)
    assert s.rgb.shape == (200, 200, 3) and s.origin == (5, 5)
    # undetected, no P-truth (NaN) and the 150 px anchor are gone; the edge box is clipped to 10 x 10 (kept, > 8)
    assert list(s.classes) == ["tumor_nonMitotic", "lymphocyte", "AMBIGUOUS", "plasma_cell"]
    np.testing.assert_array_equal(s.boxes[0], [5, 5, 35, 35])
    np.testing.assert_array_equal(s.boxes[-1], [190, 190, 200, 200])
    assert not s.ismask.any() and all(m.shape == (b[3] - b[1], b[2] - b[0]) for m, b in zip(s.masks, s.boxes, strict=True))


def _rows(values):
    return pd.DataFrame([{"experiment": f"config3_fold{f}", "truth": "corrected", "fold": f, "config": "3",
                          "tables": "Table 1", "training_data": "corrected", "det_n": 100 * f, "ap50": ap,
                          "map": ap / 2} for f, ap in values])


def test_table1_mean_row_leaves_out_the_validation_fold():
    t = table1(_rows([(1, 0.9), (2, 0.6), (3, 0.7), (4, 0.8)]), "corrected")
    assert list(t["fold"]) == ["1 (val)", "2", "3", "4", "Mean (SD), folds 2,3,4"]
    assert t.iloc[-1]["AP@.5"] == "70.0 (10.0)"  # mean and SD of 60, 70, 80 -- fold 1's 90 left out
    assert t.iloc[-1]["det N"] == 900
    assert t.iloc[0]["AP@.5"] == 90.0


def test_table_s4_recall_is_the_share_of_each_super_class_predicted_as_it():
    """Planted predictions: 4 tumour nuclei all called tumour, 4 stromal nuclei of which 1 is called stromal, 2
    sTILs both called sTIL; recall per super-class 1.0 / 0.25 / 1.0 (in percent), beside MCC and AUROC."""
    from nucls_utils.evaluation import classification_scores
    from nucls_utils.model.report import table_s4

    classes = ["tumor_any", "nonTIL_stromal", "sTIL"]
    truth = ["tumor_any"] * 4 + ["nonTIL_stromal"] * 4 + ["sTIL"] * 2
    called = ["tumor_any"] * 4 + ["nonTIL_stromal"] + ["tumor_any"] * 3 + ["sTIL"] * 2
    probs = np.array([[0.8 if c == k else 0.1 for c in classes] for k in called])
    res = classification_scores(truth, probs, classes, "super")
    s4 = table_s4({("config3_fold2", "corrected"): {"super": res}}, ["config3_fold2"], "corrected").iloc[0]
    assert (s4["recall tumor_any"], s4["recall nonTIL_stromal"], s4["recall sTIL"]) == (100.0, 25.0, 100.0)
    assert s4["MCC nonTIL_stromal"] == round(100 * res["per_class"].loc["nonTIL_stromal", "mcc"], 1)


def _diag_sample(name: str, slide: str, classes: list[str], drop: tuple[int, ...] = (), shift: dict | None = None):
    """FOV with square 20 px boxes along the diagonal; ``drop`` leaves nuclei out, ``shift`` moves a box by px."""
    from nucls_utils.model.data import FovSample

    keep = [i for i in range(len(classes)) if i not in drop]
    boxes = np.array([(25 * i, 25 * i, 25 * i + 20, 25 * i + 20) for i in keep], dtype=np.int32).reshape(-1, 4)
    for k, i in enumerate(keep):
        boxes[k, [0, 2]] += (shift or {}).get(i, 0)
    return FovSample(name=name, hospital="XX", slide=slide, rgb=np.full((260, 260, 3), 200, np.uint8), boxes=boxes,
                     classes=np.asarray([classes[i] for i in keep], dtype=object), ismask=np.zeros(len(keep), bool),
                     masks=[np.ones((20, 20), bool) for _ in keep])


def test_truth_ceiling_scores_the_generator_against_a_noisy_truth():
    """Planted: fold 1's truth equals the generator's nuclei (a perfect model scores AP@.5 100 and MCC 100); fold 2's
    truth misses 2 of 10 nuclei, draws one box 12 px off (IOU 0.25: a miss and a false addition) and calls one tumour
    nucleus a lymphocyte: of 8 truth boxes 7 match, so AP@.5 is below 100 and the main MCC below 100."""
    from nucls_utils.model.report import truth_ceiling

    classes = ["tumor_nonMitotic"] * 5 + ["lymphocyte"] * 5
    gen = [_diag_sample("a", "S1", classes), _diag_sample("b", "S2", classes)]
    noisy = list(classes)
    noisy[0] = "lymphocyte"
    truth = [_diag_sample("a", "S1", classes), _diag_sample("b", "S2", noisy, drop=(8, 9), shift={3: 12})]
    t = truth_ceiling(truth, gen, {"S1": 1, "S2": 2}).set_index("fold")
    assert t.loc[1, "AP@.5"] == 100.0 and t.loc[1, "main MCC"] == 100.0
    assert (t.loc[2, "truth nuclei"], t.loc[2, "generator nuclei"], t.loc[2, "matched at IOU 0.5"]) == (8, 10, 7)
    assert t.loc[2, "AP@.5"] < 90.0 and t.loc[2, "main MCC"] < 100.0


def test_tables_select_experiments_by_the_plan_not_by_their_names(tmp_path):
    """Experiments renamed at random still land in the right tables: Table 1 takes the config-3 runs that feed it,
    not fold 1's scale-factor ablation (also config 3, fold 1); Table S3 takes both; the plan round-trips."""
    from nucls_utils.model import experiments as ex
    from nucls_utils.model.report import in_table, table_s3

    plan = ex.experiment_plan("smoke", (1, 2))
    renamed = [dataclasses.replace(e, name=f"run{k:02d}") for k, e in enumerate(plan)]
    path = ex.save_plan(renamed, tmp_path)
    assert path.name == ex.PLAN_FILE and ex.load_plan(tmp_path) == renamed
    rows = pd.DataFrame([{"experiment": e.name, "truth": "corrected", "fold": e.fold, "config": e.config,
                          "tables": "; ".join(e.tables), "training_data": e.training_data,
                          "scale_factor": e.model.scale_factor, "det_n": 10, "ap50": 0.5 + k / 100, "map": 0.2}
                         for k, e in enumerate(renamed)])
    t1 = table1(rows, "corrected")
    assert list(t1["fold"])[:2] == ["1 (val)", "2"] and len(t1) == 3  # folds 1, 2 and the mean row
    s3 = table_s3(rows, stride=16)
    ablations = [e for e in plan if e.tables == ("Table S3",)]
    assert ablations and len(s3) == 1 + len(ablations)
    assert in_table(rows, "Table S6").sum() == sum("Table S6" in e.tables for e in plan)


def test_load_plan_names_the_missing_or_bad_file(tmp_path):
    from nucls_utils.model import experiments as ex

    with pytest.raises(FileNotFoundError, match="run notebook 05 first"):
        ex.load_plan(tmp_path)
    (tmp_path / ex.PLAN_FILE).write_text('[{"name": "x"}]')
    with pytest.raises(ValueError, match=r"plan.json: entry 0 is not an experiment"):
        ex.load_plan(tmp_path)
    (tmp_path / ex.PLAN_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        ex.load_plan(tmp_path)


def test_ptruth_errors_name_the_stored_table(tmp_path):
    root = _truth(tmp_path)
    truth = pd.read_csv(root / "truth_E.csv")
    with pytest.raises(ValueError, match=r"03_agreement/truth_E.csv: missing column\(s\) \['EM_inferred_label_Ps'\]"):
        load_ptruth_samples(truth.drop(columns="EM_inferred_label_Ps"), root / "rgb",
                            source="03_agreement/truth_E.csv")
    (root / "rgb" / f"{FOV}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"03_agreement/truth_E.csv: FOV {FOV} has no image"):
        load_ptruth_samples(truth, root / "rgb", source="03_agreement/truth_E.csv")
