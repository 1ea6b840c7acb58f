import numpy as np
import pytest

from nucls_utils import taxonomy as tx


def test_every_raw_class_maps_to_main_and_super():
    assert len(tx.RAW_CLASSES) == 13
    assert set(tx.RAW_TO_MAIN) == set(tx.RAW_CLASSES) == set(tx.GT_CODES)
    assert set(tx.RAW_TO_MAIN.values()) == set(tx.MAIN_CLASSES)
    assert set(tx.RAW_TO_SUPER.values()) == set(tx.SUPER_CLASSES)
    assert len(tx.MAIN_CLASSES) == 8 and len(tx.SUPER_CLASSES) == 5


@pytest.mark.parametrize(("raw", "main", "sup"), [
    ("tumor", "tumor_nonMitotic", "tumor_any"),
    ("mitotic_figure", "tumor_mitotic", "tumor_any"),
    ("fibroblast", "nonTILnonMQ_stromal", "nonTIL_stromal"),
    ("vascular_endothelium", "nonTILnonMQ_stromal", "nonTIL_stromal"),
    ("macrophage", "macrophage", "nonTIL_stromal"),
    ("lymphocyte", "lymphocyte", "sTIL"),
    ("plasma_cell", "plasma_cell", "sTIL"),
    ("neutrophil", "other_nucleus", "other_nucleus"),
    ("eosinophil", "other_nucleus", "other_nucleus"),
    ("myoepithelium", "other_nucleus", "other_nucleus"),
    ("ductal_epithelium", "other_nucleus", "other_nucleus"),
    ("apoptotic_body", "AMBIGUOUS", "AMBIGUOUS"),
    ("unlabeled", "AMBIGUOUS", "AMBIGUOUS"),
])
def test_class_hierarchy(raw, main, sup):
    assert tx.to_main(raw) == main
    assert tx.to_super(raw) == sup
    assert tx.to_super(main) == sup
    assert tx.to_main("correction_" + raw) == main
    assert tx.is_ambiguous(raw) == (sup == "AMBIGUOUS")


def test_correction_prefix_and_gt_codes():
    assert tx.strip_correction("correction_lymphocyte") == "lymphocyte"
    assert tx.is_correction("correction_tumor") and not tx.is_correction("tumor")
    assert tx.gt_code("correction_tumor") == 1
    assert tx.gt_code("unlabeled") == 99
    assert tx.gt_code("fov_basic") == tx.FOV_GT_CODE == 253
    assert tx.gt_code("correction_FOV_reviewed") == 253
    assert tx.class_from_gt_code(12) == "eosinophil"
    assert tx.MAIN_CODES["tumor_nonMitotic"] == 1 and tx.MAIN_CODES["AMBIGUOUS"] == 8
    assert tx.SUPER_CODES["sTIL"] == 3


def test_unknown_class_is_rejected():
    with pytest.raises(tx.UnknownClassError, match="unknown raw class 'lymphocite'"):
        tx.to_main("lymphocite")
    with pytest.raises(ValueError, match="level must be"):
        tx.map_classes(["tumor"], "family")


def test_group_probabilities_sums_children():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(14), size=50)
    cols = ["undetected", *tx.RAW_CLASSES]
    main, mgroups = tx.group_probabilities(p, cols, "main")
    sup, sgroups = tx.group_probabilities(p, cols, "super")
    np.testing.assert_allclose(main.sum(1), 1.0)
    np.testing.assert_allclose(sup.sum(1), 1.0)
    assert mgroups[-1] == "undetected" and sgroups[-1] == "undetected"
    # sTIL = lymphocyte + plasma_cell
    i_l, i_p = cols.index("lymphocyte"), cols.index("plasma_cell")
    np.testing.assert_allclose(sup[:, sgroups.index("sTIL")], p[:, i_l] + p[:, i_p])
    # grouping main-class probabilities gives the same super-class probabilities
    sup2, sgroups2 = tx.group_probabilities(main, mgroups, "super")
    assert sgroups2 == sgroups
    np.testing.assert_allclose(sup2, sup)


def test_participant_groups():
    aliases = ["SP.1", "SP.3", "JP.2", "NP.1", "NP.12"]
    assert tx.participant_group("JP.2") == "JP"
    assert tx.members(aliases, "Ps") == ["SP.1", "SP.3", "JP.2"]
    assert tx.members(aliases, "NP") == ["NP.1", "NP.12"]
    assert tx.is_pathologist("SP.2") and not tx.is_pathologist("NP.30")
    with pytest.raises(ValueError, match="does not start with"):
        tx.participant_group("Mohamed")
