"""Issue 13, hole 11: the refinement model (weights, loss history, refined suggestions) is a cached artefact, reused
only when its key and every file are unchanged; the study folder's manifest holds a sha256 per file."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from nucls_utils import io as nio
from nucls_utils.crowd import make_roster, write_annotation_study
from nucls_utils.io.manifest import verify_manifest
from nucls_utils.suggestions import RefinerConfig, bootstrap_dataset, refine_dataset, run

CFG = RefinerConfig(iterations=2, batch_size=2, score_threshold=0.15)


@pytest.fixture(scope="module")
def small(smoke_cohort):
    records = nio.read_dataset(smoke_cohort)[:4]
    return records, bootstrap_dataset(records, smoke_cohort, progress=False)


def _weights(model) -> list[np.ndarray]:
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def _refine(records, boot, cache, cfg=CFG):
    said = []
    out = refine_dataset(records, boot, cfg, seed=0, progress=False, cache_dir=cache, say=said.append)
    return out, said


@pytest.mark.timeout(180)
def test_refiner_cache_is_reused_when_nothing_changed(small, tmp_path, monkeypatch):
    records, boot = small
    cache = tmp_path / "refiner"
    first, said = _refine(records, boot, cache)
    assert not first.reused and "no cached refiner" in said[0]
    assert sum(map(len, first.refined)) > 0
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["key"] == first.key and set(manifest["files"]) == {"model.pt", "history.json", "refined.json"}
    assert verify_manifest(cache, expect={"key": first.key}) is None

    def no_training(*args, **kwargs):
        raise AssertionError("the refiner was retrained although nothing changed")

    monkeypatch.setattr(run, "train_refiner", no_training)
    again, said = _refine(records, boot, cache)
    assert again.reused and again.reason is None and "reusing" in said[0]
    assert again.refined == first.refined and again.confidences == first.confidences
    pd.testing.assert_frame_equal(again.history, first.history, check_exact=True)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(again.model), _weights(first.model), strict=True))
    # the reloaded model predicts what the trained one did
    im = records[0].read_rgb()
    with torch.no_grad():
        from nucls_utils.suggestions import refine_fov

        assert refine_fov(again.model, im, CFG.score_threshold, CFG.nms_iou) == (first.refined[0],
                                                                                 first.confidences[0])
    # unpacks like the old 4-tuple
    refined, confidences, history, model = again
    assert refined is again.refined and model is again.model


@pytest.mark.timeout(240)
def test_refiner_cache_retrains_when_inputs_or_files_change(small, tmp_path):
    records, boot = small
    cache = tmp_path / "refiner"
    first, _ = _refine(records, boot, cache)
    # the bootstrap changes (one suggestion fewer): another key
    changed = [list(b) for b in boot]
    changed[1] = changed[1][1:]
    other, said = _refine(records, changed, cache)
    assert not other.reused and other.key != first.key
    assert "has key=" in said[0] and said[0].endswith(": retraining")
    # the config changes: another key
    cfg = RefinerConfig(iterations=3, batch_size=2, score_threshold=0.15)
    assert run.refiner_key(cfg, 0, "x") != run.refiner_key(CFG, 0, "x") != run.refiner_key(CFG, 1, "x")
    # back to the original inputs: retrained (the cache now holds the other key), then reused
    back, _ = _refine(records, boot, cache)
    assert not back.reused and back.key == first.key and back.refined == first.refined
    assert _refine(records, boot, cache)[0].reused
    # one byte of the weights changes: retrained, saying which file
    data = bytearray((cache / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (cache / "model.pt").write_bytes(bytes(data))
    fixed, said = _refine(records, boot, cache)
    assert not fixed.reused
    assert said[0] == ("refiner cache: file 'model.pt' changed since it was written (sha256 differs): retraining")
    assert fixed.refined == first.refined
    assert verify_manifest(cache, expect={"key": first.key}) is None
    # a stray file in the folder is not part of the artefact either
    (cache / "extra.txt").write_text("x")
    assert "not listed" in _refine(records, boot, cache)[1][0]


def test_study_manifest_lists_every_file_with_its_hash(small, tmp_path):
    records, boot = small
    rng = np.random.default_rng(0)
    conf = [[0.9] * len(b) for b in boot]
    sample = pd.DataFrame({"stratum": "test"}, index=[0, 2])
    m = write_annotation_study(tmp_path / "study", records, boot, boot, conf, sample, make_roster(rng, 1, 1, 4), rng,
                               seed=0, nps_per_fov=(2, 3))
    study = tmp_path / "study"
    assert json.loads((study / "manifest.json").read_text()) == m
    files = {p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(m["files"]) == files and "singlerater/corrected/csv/" + records[0].name + ".csv" in files
    assert verify_manifest(study, expect={"seed": 0}) is None
    csv = study / "singlerater" / "corrected" / "csv" / f"{records[0].name}.csv"
    csv.write_bytes(csv.read_bytes()[:-1])
    assert "changed since it was written" in verify_manifest(study)
