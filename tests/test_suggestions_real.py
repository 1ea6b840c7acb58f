"""Issue 13, holes 12 and 8: the real-data path of notebook 02 (no tissue-region maps, so every bootstrap nucleus is
``unlabeled``) finishes in bounded time, and classification scores that are not defined are NaN, not 0."""

import time

import numpy as np
import pytest

from nucls_utils import io as nio
from nucls_utils.io.dataset import Nucleus
from nucls_utils.suggestions import (
    CLASS_AGNOSTIC,
    NO_CLASS,
    NO_PAIRS,
    REFINER_PROFILES,
    RefinerConfig,
    bootstrap_dataset,
    build_refiner,
    per_fov_scores,
    refine_dataset,
    refiner_classes,
    suggestion_table,
    train_refiner,
)


@pytest.mark.timeout(30)
def test_training_on_suggestions_without_a_trainable_class_fails_fast():
    """Before: ``while len(batch) < batch_size`` sampled crops for ever, as no crop had a target."""
    rgb = np.full((200, 200, 3), 200, dtype=np.uint8)
    sug = [Nucleus.from_box("unlabeled", 20 + 30 * i, 40, 45 + 30 * i, 65) for i in range(5)]
    with pytest.raises(ValueError, match="no FOV has a bootstrap suggestion to train on.*'unlabeled'"):
        train_refiner(build_refiner(seed=0), [rgb], [sug], RefinerConfig(iterations=1, batch_size=2), progress=False)


@pytest.mark.timeout(30)
def test_crop_sampling_gives_up_with_a_clear_error():
    """One small nucleus in a large FOV: random crops almost never hold it; a cap on the tries ends the loop."""
    rgb = np.full((1500, 1500, 3), 200, dtype=np.uint8)
    sug = [Nucleus.from_box("tumor", 2, 2, 10, 10)]
    with pytest.raises(RuntimeError, match="random 128 x 128 px crops gave only"):
        train_refiner(build_refiner(seed=0), [rgb], [sug], RefinerConfig(iterations=1, batch_size=2), progress=False,
                      max_tries=3)


def test_refiner_classes():
    assert refiner_classes([[Nucleus.from_box("unlabeled", 0, 0, 9, 9)], []]) == CLASS_AGNOSTIC
    assert refiner_classes([[Nucleus.from_box("unlabeled", 0, 0, 9, 9), Nucleus.from_box("tumor", 0, 0, 9, 9)]]) != \
        CLASS_AGNOSTIC


@pytest.mark.timeout(300)
def test_notebook02_pipeline_on_the_real_sample_finishes(sample_dir, tmp_path):
    """Bootstrap + refinement (smoke profile) + Table S2 on the 17 real FOVs: bounded, and classification 'not
    defined' rather than 0 (the bootstrap carries no class without region maps)."""
    t0 = time.monotonic()
    records = nio.read_dataset(sample_dir)
    boot = bootstrap_dataset(records, None, progress=False)
    assert {n.raw_class for b in boot for n in b} == {"unlabeled"}
    ref = refine_dataset(records, boot, REFINER_PROFILES["smoke"], seed=0, progress=False,
                         cache_dir=tmp_path / "refiner", say=None)
    assert ref.class_agnostic and all(n.raw_class == "unlabeled" for r in ref.refined for n in r)
    s2 = suggestion_table([r.nuclei for r in records], {"bootstrap": boot, "refined": ref.refined}).set_index(
        "suggestions")
    assert s2.at["bootstrap", "detection_N"] == 726 and 0 < s2.at["bootstrap", "F1"] <= 100
    assert s2.at["bootstrap", "classification_note"] == NO_CLASS
    assert s2.loc["bootstrap", ["accuracy", "MCC", "MCC_sTIL", "recall_sTIL"]].isna().all()
    assert per_fov_scores([r.nuclei for r in records], boot)["accuracy"].isna().all()
    assert time.monotonic() - t0 < 240


def test_classification_scores_not_defined_vs_real_zeros():
    truth = [[Nucleus.from_box("tumor", 0, 0, 20, 20), Nucleus.from_box("lymphocyte", 40, 40, 60, 60),
              Nucleus.from_box("unlabeled", 80, 0, 95, 15)]]
    same_boxes = lambda cls: [[n.relabelled(c) for n, c in zip(truth[0], cls, strict=True)]]  # noqa: E731
    s2 = suggestion_table(truth, {
        "no class": same_boxes(["unlabeled", "apoptotic_body", "unlabeled"]),
        "all wrong": same_boxes(["lymphocyte", "tumor", "tumor"]),
        "none": [[]],
        "ambiguous truth only": [[truth[0][2].relabelled("tumor")]],
    }).set_index("suggestions")
    assert s2.at["no class", "classification_note"] == NO_CLASS
    assert s2.loc["no class", ["accuracy", "MCC", "MCC_tumor_any", "recall_sTIL"]].isna().all()
    assert s2.at["no class", "F1"] == 100  # detection is still measured
    # suggestions that carry classes, all wrong: real zeros (and a negative MCC), no note
    assert s2.at["all wrong", "classification_note"] == ""
    assert s2.at["all wrong", "accuracy"] == 0 and s2.at["all wrong", "recall_sTIL"] == 0
    assert s2.at["all wrong", "MCC"] == pytest.approx(-100)
    assert s2.at["none", "classification_note"] == NO_PAIRS and np.isnan(s2.at["none", "accuracy"])
    assert s2.at["ambiguous truth only", "classification_note"] == NO_PAIRS
    scores = per_fov_scores(truth, same_boxes(["unlabeled", "unlabeled", "unlabeled"]))
    assert scores["accuracy"].isna().all() and scores["F1"].iloc[0] == 100
    assert per_fov_scores(truth, same_boxes(["lymphocyte", "tumor", "tumor"]))["accuracy"].iloc[0] == 0
