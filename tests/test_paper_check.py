"""The paper-profile check (``python -m nucls_utils.model.experiments paper-check``): every experiment of a profile's
plan trains a few updates, is killed after its checkpoint, resumes and predicts the same; here on the smoke profile
(a paper-profile update takes tens of seconds on a CPU; the check's measured outcome is in the README)."""

from __future__ import annotations

import pytest

from nucls_utils.model import experiments as ex
from nucls_utils.model import pretrain as pt


@pytest.fixture()
def smoke_trunk(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCLS_PRETRAINED_DIR", str(tmp_path / "pretrained"))
    return pt.ensure_pretrained("smoke", progress=False, say=None)


def test_every_experiment_resumes_from_its_checkpoint_and_predicts_the_same(smoke_cohort, smoke_trunk, tmp_path):
    table = ex.paper_profile_check(smoke_cohort, tmp_path / "check", max_updates=2, fovs_per_hospital=2,
                                   profile="smoke", say=None)
    plan = ex.experiment_plan("smoke", sorted(table["fold"].unique()), weights=smoke_trunk)
    assert list(table["experiment"]) == [e.name for e in plan]
    assert sorted(table["fold"].unique()) == [1, 2, 3]  # 3 hospitals in the smoke cohort: 3 folds
    trained = table[table["config"] != "4"]
    # stopped after update 1 of 2 with its checkpoint: the rerun trains exactly the one update left
    assert (trained["updates_after_resume"] == 1).all()
    assert table.loc[table["config"] == "4", "updates_after_resume"].isna().all()  # reuses config 2's detector
    # the first experiment of each trained architecture was also trained uninterrupted: byte-identical predictions
    compared = table[table["same_predictions_after_resume"].notna()]
    assert list(compared["experiment"]) == ["config3_fold1", "config1_fold1", "config2_fold1", "config6_fold1"]
    assert compared["same_predictions_after_resume"].eq(True).all()
    assert sorted(p.name for p in (tmp_path / "check" / "uninterrupted").iterdir()) == sorted(compared["experiment"])
    key = smoke_trunk.removeprefix(pt.TOKEN_PREFIX)
    # the smoke profile starts from the trunk and the detector pretrained with it (config 4: config 2's detector)
    start = f"synthetic-pretrained trunk {key} + pretrained detector ("
    assert table["weights_source"].str.startswith(start).all()
    # one test FOV per experiment, evaluated
    assert (table["n_test_fovs"] == 1).all() and table["ap50_test"].between(0, 1).all()
    for name in trained["experiment"]:  # the resumed run finished: final weights, checkpoint gone
        assert (tmp_path / "check" / name / "model.pt").is_file()
        assert not (tmp_path / "check" / name / "checkpoint.pt").exists()


def test_the_check_compares_the_experiments_asked_for():
    plan = ex.experiment_plan("paper", [1, 2, 3, 4, 5], weights=None)
    trained = [e.name for e in plan if e.config != "4"]
    assert ex._compared_experiments(plan, "all") == trained and len(trained) == len(plan) - 1
    assert ex._compared_experiments(plan, "none") == []
    # the first of each architecture: Table 1's config 3 on fold 1 stands for the other folds, Table S3 and Table S6
    assert ex._compared_experiments(plan, "configs") == ["config3_fold1", "config1_fold1", "config2_fold1",
                                                         "config6_fold1"]


def test_the_check_needs_an_update_on_each_side_of_the_kill(smoke_cohort, tmp_path):
    with pytest.raises(ValueError, match="max_updates must be >= 2"):
        ex.paper_profile_check(smoke_cohort, tmp_path / "check", max_updates=1, profile="smoke", say=None)
    with pytest.raises(ValueError, match="compare must be"):
        ex.paper_profile_check(smoke_cohort, tmp_path / "check", compare="some", profile="smoke", say=None)


def test_a_plan_run_by_two_workers_equals_one_worker(smoke_cohort, smoke_trunk, tmp_path):
    """Two spawned one-thread workers give the same models and predictions as one in-process worker with one
    thread, and config 4 waits for the config-2 detector it reuses."""
    from nucls_utils.io.dataset import read_dataset
    from nucls_utils.io.folds import hospital_kfold
    from nucls_utils.model.data import load_fov_samples

    samples = load_fov_samples(read_dataset(smoke_cohort), progress=False)
    data = ex.ExperimentData(samples={"corrected": samples, "uncorrected": samples},
                             assignment=hospital_kfold([s.slide for s in samples], n_folds=3, seed=0))
    plan = [e for e in ex.experiment_plan("smoke", [1, 2], weights=smoke_trunk)
            if e.name in ("config3_fold2", "config2_fold1", "config4_fold1")]
    assert [e.name for e in plan] == ["config3_fold2", "config2_fold1", "config4_fold1"]
    one = ex.run_plan(plan, data, tmp_path / "one", profile="smoke", workers=1, threads=1, progress=False)
    two = ex.run_plan(plan, data, tmp_path / "two", profile="smoke", workers=2, threads=1, progress=False)
    assert [s["name"] for s in two] == [e.name for e in plan] and not any(s["reused"] for s in one + two)
    for e in plan:
        a, b = (sorted((tmp_path / k / e.name).glob("predictions_*.npz")) for k in ("one", "two"))
        assert [p.name for p in a] == [p.name for p in b] and a
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True)), e.name
    # a detector that comes after its user is refused before anything runs
    with pytest.raises(ValueError, match="reuses the detector of config2_fold1"):
        ex.run_plan(plan[::-1], data, tmp_path / "bad", profile="smoke", workers=2, progress=False)


@pytest.mark.slow
def test_a_plan_run_as_dask_tasks_equals_one_worker(smoke_cohort, smoke_trunk, tmp_path):
    """One Dask task per experiment on a local cluster of two workers: the same predictions as in process, and
    config 4's task waits for the config-2 detector it reuses."""
    from nucls_utils.io.dataset import read_dataset
    from nucls_utils.io.folds import hospital_kfold
    from nucls_utils.model.data import load_fov_samples

    samples = load_fov_samples(read_dataset(smoke_cohort), progress=False)
    data = ex.ExperimentData(samples={"corrected": samples},
                             assignment=hospital_kfold([s.slide for s in samples], n_folds=3, seed=0))
    plan = [e for e in ex.experiment_plan("smoke", [1], weights=smoke_trunk)
            if e.name in ("config2_fold1", "config4_fold1")]
    one = ex.run_plan(plan, data, tmp_path / "one", profile="smoke", workers=1, threads=1, progress=False)
    dask = ex.run_plan(plan, data, tmp_path / "dask", profile="smoke", threads=1, progress=False,
                       scheduler="local:2")
    assert [s["name"] for s in dask] == [e.name for e in plan] and not any(s["reused"] for s in one + dask)
    for e in plan:
        a, b = (sorted((tmp_path / k / e.name).glob("predictions_*.npz")) for k in ("one", "dask"))
        assert [p.name for p in a] == [p.name for p in b] and a
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True)), e.name


def test_a_gpu_runs_the_plan_one_experiment_at_a_time():
    assert ex.plan_parallelism("cpu") == (2, 1)
    assert ex.plan_parallelism("cpu", "cuda") == (1, 1)  # same threads, so the same numbers as two workers
    assert ex.plan_parallelism("paper", "cuda") == (1, None)
