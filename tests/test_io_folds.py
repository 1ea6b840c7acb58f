"""Hospital folds and Table 1's detection N on the real core-set metadata."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nucls_utils import io as nio


def test_table1_detection_n_on_core_metadata(metadata_path):
    fovs, ann = nio.read_core_metadata(metadata_path)
    assert len(ann) == 59541 and fovs["slide_name"].nunique() == 124 and len(fovs) == 1746
    assignment = nio.paper_folds(fovs["slide_name"].unique())
    assert assignment.groupby("fold").size().to_dict() == {1: 22, 2: 27, 3: 32, 4: 25, 5: 18}
    tab = nio.fold_table(ann, fovs, assignment, nio.PAPER_TABLE1_N).set_index("fold")
    assert tab["N_detection"].to_dict() == {1: 6102, 2: 15486, 3: 12672, 4: 8260, 5: 7295}
    for k in (1, 3, 4, 5):
        assert tab.loc[k, "N_detection"] == nio.PAPER_TABLE1_N[k]
    assert tab["n_fovs"].to_dict() == nio.PAPER_FOLD_N_FOVS


def test_duplicate_fovs_explain_the_fold2_difference(metadata_path):
    fovs, ann = nio.read_core_metadata(metadata_path, drop_duplicate_fovs=True)
    assert len(fovs) == 1744 and fovs["fovname"].is_unique
    tab = nio.fold_table(ann, fovs, nio.paper_folds(fovs["slide_name"].unique()), nio.PAPER_TABLE1_N)
    assert tab["N_difference"].tolist() == [0, 0, 0, 0, 0]
    # notebook 01's table1_folds_N: both counts beside the paper's
    full_fovs, full_ann = nio.read_core_metadata(metadata_path)
    stored = nio.fold_table(full_ann, full_fovs, nio.paper_folds(full_fovs["slide_name"].unique()), nio.PAPER_TABLE1_N)
    both = nio.core_table1_n(stored, tab).set_index("fold")
    assert both.loc[2, "N_detection"] == 15486 and both.loc[2, "N_detection_without_duplicate_fovs"] == 15442
    assert (both["N_detection_without_duplicate_fovs"] == both["N_paper"]).all()


def test_detection_rule_matches_a_direct_count():
    fovs = pd.DataFrame({"fovname": ["f"], "slide_name": ["TCGA-A1-X-DX1"], "hospital": ["A1"],
                         "fov_xmin": [10], "fov_ymin": [10], "fov_xmax": [100], "fov_ymax": [100]})
    boxes = [  # (raw class, xmin, ymin, xmax, ymax, counts?)
        ("tumor", 20, 20, 40, 40, True),
        ("tumor", 0, 20, 19, 40, True),      # clipped to 9 px wide -> counts
        ("tumor", 0, 20, 18, 40, False),     # clipped to 8 px wide -> dropped (side must be > 8)
        ("unlabeled", 20, 20, 40, 40, False),
        ("apoptotic_body", 50, 50, 70, 70, False),
        ("lymphocyte", 95, 95, 120, 120, False),  # 5 x 5 inside the FOV
    ]
    ann = pd.DataFrame([dict(fovname="f", slide_name="TCGA-A1-X-DX1", raw_class=c, xmin=a, ymin=b, xmax=x, ymax=y,
                             super_class="AMBIGUOUS" if c in ("unlabeled", "apoptotic_body") else "tumor_any")
                        for c, a, b, x, y, _ in boxes])
    assert nio.detection_mask(ann, fovs).tolist() == [b[-1] for b in boxes]


def test_paper_folds_reject_foreign_hospitals():
    with pytest.raises(ValueError, match=r"hospital\(s\) \['ZZ'\] are not in the paper's folds"):
        nio.paper_folds(["TCGA-A1-AAAA-DX1", "TCGA-ZZ-BBBB-DX1"])


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=5, max_size=25), seed=st.integers(0, 2**32 - 1),
       n_folds=st.integers(2, 5))
def test_hospital_kfold_properties(sizes, seed, n_folds):
    slides = [f"TCGA-H{h:02d}-S{i:03d}-DX1" for h, n in enumerate(sizes) for i in range(n)]
    a = nio.hospital_kfold(slides, n_folds=n_folds, seed=seed)
    assert sorted(a["slide_name"]) == sorted(slides)
    # no hospital is split across folds, every fold has a test set
    assert (a.groupby("hospital")["fold"].nunique() == 1).all()
    assert set(a["fold"]) == set(range(1, n_folds + 1))
    # each fold holds exactly one of the n_folds largest hospitals (ties broken by name)
    per = a.groupby("hospital").size()
    big = sorted(per.index, key=lambda h: (-per[h], h))[:n_folds]
    assert sorted(a[a["hospital"].isin(big)].groupby("fold")["hospital"].nunique()) == [1] * n_folds
    # same seed -> same split
    assert a.equals(nio.hospital_kfold(slides[::-1], n_folds=n_folds, seed=seed))
    train, test = nio.fold_slides(a, 1)
    assert not set(train) & set(test) and len(train) + len(test) == len(slides)


def test_hospital_kfold_needs_enough_hospitals():
    with pytest.raises(ValueError, match="2 hospital"):
        nio.hospital_kfold(["TCGA-A1-X-DX1", "TCGA-A2-Y-DX1"], n_folds=5)


def test_different_seeds_give_different_splits():
    slides = [f"TCGA-H{h:02d}-S{i:03d}-DX1" for h in range(18) for i in range(1 + h % 7)]
    splits = {tuple(nio.hospital_kfold(slides, seed=s)["fold"]) for s in range(5)}
    assert len(splits) > 1


def test_fold_assignment_save_load_round_trip_and_bad_rows(tmp_path):
    from nucls_utils.io import load_fold_assignment, save_fold_assignment

    slides = [f"TCGA-{h}-A00{i}-DX1" for h in ("A1", "A2", "AO", "AR", "A7", "BH") for i in range(2)]
    assignment = nio.paper_folds(slides)
    stage = tmp_path / "results" / "ds" / "01_data_prep"
    path = save_fold_assignment(assignment, stage)
    back = load_fold_assignment(tmp_path / "results", "ds")
    pd.testing.assert_frame_equal(back, assignment[["slide_name", "hospital", "fold"]].astype(
        {"slide_name": object, "hospital": object}).assign(fold=assignment["fold"].astype(int)))
    assert back["fold"].dtype.kind == "i" and sorted(set(back["fold"])) == [1, 2, 3, 4, 5]
    with pytest.raises(FileNotFoundError, match="run notebook 01 first"):
        load_fold_assignment(tmp_path / "results", "other")
    text = path.read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",two"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"fold_assignment.csv, row 4, field fold: 'two' is not a fold number"):
        load_fold_assignment(tmp_path / "results", "ds")
    with pytest.raises(ValueError, match="is assigned twice"):
        save_fold_assignment(pd.concat([assignment, assignment.iloc[:1]]), stage)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['fold'\]"):
        save_fold_assignment(assignment.drop(columns="fold"), stage)
    assert "two" in path.read_text()  # a rejected save leaves the stored file as it was
