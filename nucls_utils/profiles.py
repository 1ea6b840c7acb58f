"""The compute profiles (smoke / cpu / paper), declared in one place for every stage of the study.

A profile is a compute budget: ``smoke`` runs the whole study in minutes for the tests and CI, ``cpu`` fits a 2-core
machine in under an hour, ``paper`` is the paper's configuration (meant for a GPU). Every number that differs
between profiles lives here and nowhere else:

* :data:`STAGES`: per stage, the keyword arguments that each profile gives that stage's config class (the classes
  and their defaults, which are the paper's, stay with the stage's code): the synthetic cohort
  (:class:`nucls_utils.phantom.cohort.CohortSpec`), the pretraining (:class:`nucls_utils.model.pretrain.
  PretrainConfig`), the suggestion refiner (:class:`nucls_utils.suggestions.refine.RefinerConfig`), the NuCLS model
  (:class:`nucls_utils.model.architecture.ModelConfig`) and its training (:class:`nucls_utils.model.train.
  TrainConfig`), Table S5's thumbnail classifier (:class:`nucls_utils.model.classifier.ClassifierConfig`) and the
  baselines of notebook 08 (:class:`nucls_utils.baselines.study.BaselineSettings`).
  Each stage module builds its ``*_PROFILES`` registry from these.
* :class:`StudySettings` (:func:`settings`): the plain numbers of the notebooks (multi-rater FOVs, bootstrap
  resamples, EM simulation realisations, other rosters, the realism test's CNN, the training plan's parallelism,
  DTALE's tree). :func:`nucls_utils.config.start_run` hands them to each notebook as ``ctx.settings``.

``python -m nucls_utils.profiles`` prints every setting of every stage side by side (:func:`table`). Values marked
*fitted* in the comments were chosen on the validation fold (fold 1) or the calibration world, never on a test fold
(README, "Fitted vs found").

This module imports nothing heavier than the standard library, so the stage modules (and ``config``) can read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PROFILE_NAMES", "DESCRIPTIONS", "EXPECTS_GPU", "STAGES", "StudySettings", "SETTINGS", "settings",
           "stage_settings", "check_profile", "table"]

#: The profiles, smallest first.
PROFILE_NAMES: tuple[str, ...] = ("smoke", "cpu", "paper")
#: One line on what each profile is for.
DESCRIPTIONS: dict[str, str] = {
    "smoke": "tiny cohort and few iterations: the whole run in minutes; used by tests and CI",
    "cpu": "sized for a 2-core CPU: run_all well under an hour, every effect of the paper visible",
    "paper": "the paper's hyperparameters (Table S7); meant for a GPU",
}
#: Profiles meant for a GPU.
EXPECTS_GPU: frozenset[str] = frozenset({"paper"})


def check_profile(profile: str) -> str:
    """``profile`` when it is one of :data:`PROFILE_NAMES`; else a ValueError naming the choices."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return profile


# ---------------------------------------------------------------------------------------------------------------
# Stage configs: profile -> keyword arguments of the stage's config class
# ---------------------------------------------------------------------------------------------------------------

# the cpu model (config 3 of Table S5 on a 2-core budget). classifier_head='own': with a few hundred detection
# updates the box head shared with box regression (reference code) cannot serve the classifier as well; the
# classifier's own MLP trains on after the freeze (README, fold-1 table). detector_start: the detection layers start
# from the detector pretrained with the trunk (model/pretrain.py; README); classifier_start: config 3 also takes the
# detector's classifier (fold 1, seeds 0 / 1: super MCC 62.1 / 56.4 -> 74.1 / 68.6, config 2 64.9 / 62.3; README,
# "Pretrained detector", third round; fitted). Test-time proposals 2000 -> 1000 (training keeps 1000 -> 300; the
# paper's model keeps 3000, the refiner 1000): with 300 the fold-1 model (run 32, validation) missed nuclei it would
# have found: AP@.5 48.8 -> 52.5 (README; fitted)
_CPU_MODEL = dict(backbone_layer="layer3", scale_factor=2.0, scale_jitter=0.2, roi_size=7, representation=256,
                  box_batch_size_per_image=64, rpn_pre_nms_top_n=1000, rpn_post_nms_top_n=300,
                  rpn_pre_nms_top_n_test=2000, rpn_post_nms_top_n_test=1000, mask_channels=64, neck_channels=64,
                  classifier_head="own", detector_start=True, classifier_start=True)

#: Per stage, per profile: the keyword arguments of the stage's config class (its defaults are the paper's).
STAGES: dict[str, dict[str, dict]] = {
    # phantom.cohort.CohortSpec. hospital_slides=None: the core set's slides per hospital
    # (phantom.calibration.HOSPITAL_SLIDE_COUNTS)
    "cohort": {
        # 3 hospitals, 10 FOVs: seconds
        "smoke": dict(hospital_slides=(2, 2, 1), rois_per_slide=1, fovs_per_roi=2, roi_size_px=900),
        # 8 hospitals (enough for 5 by-hospital folds), 30 slides, 60 ROIs, 120 FOVs: about 30 s on 2 cores
        "cpu": dict(hospital_slides=(6, 5, 4, 4, 3, 3, 3, 2), rois_per_slide=2, fovs_per_roi=2, roi_size_px=900),
        # the core set's shape: 18 hospitals with the real slide counts (124 slides), 1,736 FOVs
        "paper": dict(hospital_slides=None, rois_per_slide=2, fovs_per_roi=7, roi_size_px=1400),
    },
    # model.pretrain.PretrainConfig (the paper profile starts from ImageNet when it can load it)
    "pretrain": {
        "smoke": dict(cohort_profile="smoke", iterations=3, batch_size=2, crop=64, detector_iterations=2,
                      detector_model="smoke"),
        # the detector: fold 1 (validation) of the cpu study, config 3: 600 updates took AP@.5 44.1 -> 51.0 and super
        # MCC 50.2 -> 59.7 (same 300 + 360 study updates); 1500, with the study's 200 + 360 at peak lr 0.005, 57.1 /
        # 65.7 (README, "Pretrained detector"; fitted). About 10 minutes once per clone on 2 cores
        "cpu": dict(detector_iterations=1500, detector_model="cpu", detector_lr=0.02),
        "paper": dict(),
    },
    # suggestions.refine.RefinerConfig. smoke and cpu draw class-balanced crops: chosen on the validation fold
    # (fold 1) against the exact truth, 3 seeds (README, "Refinement model"; fitted); paper keeps the reference's
    # uniform crops
    "refiner": {
        "smoke": dict(iterations=3, batch_size=2, class_balance=1.0),
        "cpu": dict(iterations=1000, class_balance=1.0),
        "paper": dict(iterations=5000, batch_size=8),
    },
    # model.architecture.ModelConfig of the final model (config 3); Table S5's ablations are changes to it
    # (model.architecture.MODEL_CONFIGS)
    "model": {
        "smoke": {**_CPU_MODEL, **dict(representation=64, box_batch_size_per_image=32, rpn_post_nms_top_n=200,
                                       mask_channels=16, neck_channels=16)},
        "cpu": _CPU_MODEL,
        "paper": dict(),
    },
    # model.train.TrainConfig
    "training": {
        "smoke": dict(iterations=4, batch_size=2, crop=96, schedule="onecycle", lr=0.01, freeze_detection_at=3,
                      grad_clip=10.0, checkpoint_every=2),
        # cpu: detection fine-tunes the pretrained detector for 200 updates at a peak lr of 0.005 (the detector itself
        # trained at 0.02; restarting at 0.02 undid part of it: fold 1 AP@.5 57.6 vs 57.7, super MCC 58.2 vs 63.3);
        # classification then fine-tunes for 360 more, which cost about a third to a half of a full update each (60
        # left the classifier far weaker: Table 1 main MCC 26.9 vs 37.6; README). class_balance 0.5 (with the
        # pretrained detector): fold 1, seeds 0 / 1, stromal recall 0.73 / 0.29 instead of 0.46 / 0.00 at super MCC
        # 55.4 / 57.9 instead of 59.7 / 55.2 (README, "Pretrained detector"; fitted on the validation fold)
        "cpu": dict(iterations=560, batch_size=2, crop=160, schedule="onecycle", lr=5e-3, freeze_detection_at=200,
                    finetune_lr=5e-3, grad_clip=10.0, eval_every=100, checkpoint_every=100, class_balance=0.5),
        "paper": dict(iterations=16000, batch_size=4, crop=300, freeze_detection_at=15000, eval_every=2000,
                      checkpoint_every=500),
    },
    # model.classifier.ClassifierConfig (smoke: a few updates; cpu: about a minute on 2 CPU cores)
    "classifier": {
        "smoke": dict(arch="compact", size=64, channels=(8, 16, 24, 32), iterations=3, batch_size=8, lr=3e-3),
        "cpu": dict(arch="compact", size=64, channels=(32, 64, 128, 128), iterations=300, batch_size=48, lr=4e-3),
        "paper": dict(),
    },
    # baselines.study.BaselineSettings of notebook 08 (the networks' settings as their config classes' keyword
    # arguments). cpu: fold 1 only and nets sized to a few minutes of the hour (README, "Baselines"); paper: every
    # fold, the seeds' own widths (U-Nets at 64 channels) and the authors' 5 cycles
    "baselines": {
        "smoke": dict(folds=(1,), tile=dict(epochs=1, pseudo_rounds=1), tile_max=300,
                      unet_small=dict(depth=3, base=4, iterations=2, crop=64, batch_size=2),
                      unet_full=dict(depth=5, base=4, iterations=2, crop=64, batch_size=2),
                      front_end=dict(epochs=1, width=4), front_max=200, cyclic_fovs=3, cycles=2,
                      back_end_iterations=2, transfer_fovs=2),
        "cpu": dict(folds=(1,), tile=dict(epochs=6), tile_max=5000,
                    unet_small=dict(depth=3, base=16, iterations=200),
                    unet_full=dict(depth=5, base=16, iterations=200),
                    front_end=dict(epochs=5), front_max=3000, cyclic_fovs=30, cycles=2, back_end_iterations=100),
        "paper": dict(),
    },
    # phantom.slide.SlideSpec: the synthetic whole slide of notebook 09 (level-0 px at 0.25 um/px, a 40x scan).
    # smoke: 250 x 200 microns, a few tiles; cpu: 1 x 1 mm, notebook 09 in a few minutes on 2 cores; paper: 4 x 3 mm
    "slide": {
        "smoke": dict(width_px=1000, height_px=800),
        "cpu": dict(width_px=4000, height_px=4000),
        "paper": dict(width_px=16000, height_px=12000),
    },
}

#: Where each stage's config class lives (module, class), for :func:`table`.
_STAGE_CLASSES: dict[str, tuple[str, str]] = {
    "cohort": ("nucls_utils.phantom.cohort", "PROFILE_SPECS"),
    "pretrain": ("nucls_utils.model.pretrain", "PRETRAIN_PROFILES"),
    "refiner": ("nucls_utils.suggestions.refine", "REFINER_PROFILES"),
    "model": ("nucls_utils.model.train", "MODEL_PROFILES"),
    "training": ("nucls_utils.model.train", "TRAIN_PROFILES"),
    "classifier": ("nucls_utils.model.classifier", "CLASSIFIER_PROFILES"),
    "baselines": ("nucls_utils.baselines.study", "BASELINE_PROFILES"),
    "slide": ("nucls_utils.phantom.slide", "SLIDE_SPECS"),
}


def stage_settings(stage: str) -> dict[str, dict]:
    """``{profile: keyword arguments}`` of one stage of :data:`STAGES` (copies)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return {p: dict(STAGES[stage][p]) for p in PROFILE_NAMES}


# ---------------------------------------------------------------------------------------------------------------
# The notebooks' plain numbers
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySettings:
    """The numbers of the notebooks that depend on the profile (``ctx.settings`` in a notebook)."""

    #: multi-rater FOVs of the simulated annotation study (notebook 02; the paper's study had 54)
    multirater_fovs: int
    #: bootstrap resamples of the NP-label AUROC intervals (notebook 03)
    bootstrap_resamples: int
    #: realisations per k of the NP-redundancy simulation (notebook 04; the paper's 1000)
    em_realisations: int
    #: other rosters drawn to show the spread of the crowd's statistics between rosters (notebook 03)
    roster_spread_rosters: int
    #: epochs and trainings of the patch CNN of the realism test (notebook 01). Until generator 2.4 the AUROC ranked
    #: all folds' scores together and moved by up to 0.13 with the seed; the mean of the folds' own AUROCs does not
    #: have that noise (three trainings of the 2.4 cpu cohort gave 0.997-0.999), so cpu trains once (about 2 minutes
    #: of its hour); paper keeps three, which guard against the seed where a generator scores well below 1
    patch_epochs: int
    patch_repeats: int
    #: ``(worker processes, torch threads per experiment)`` of notebook 05's training plan. Every experiment runs
    #: with the same thread count whatever the number of workers, so its numbers do not depend on the parallelism.
    #: cpu: two one-thread workers keep both cores busy through the single-threaded parts of a training step;
    #: paper: one process, torch's default threads (a GPU does the work). None: torch's default
    plan_workers: int
    plan_threads: int | None
    #: DTALE's regression tree (notebook 07): the minimum leaf as a share of the explained nuclei (at least
    #: ``tree_min_leaf_floor``), or None for the paper's own minimum leaf; the smaller profiles explain far fewer
    #: nuclei than the paper's minimum leaf would allow
    tree_min_leaf_share: float | None
    #: the held-out detection AP@.5 (mean over test folds, notebook 06) below which a model of this profile is
    #: called out as not working; None: no expectation (the smoke profile trains a few updates, to test the path)
    expected_min_ap50: float | None = None
    tree_min_leaf_floor: int = 5
    #: ``(Dask workers, torch threads per worker)`` of notebook 09's whole-slide prediction (0 workers: in the
    #: notebook's process). The table does not depend on the workers at a fixed thread count (tests/test_wsi.py);
    #: cpu: two one-thread workers, as notebook 05's plan; paper: in process with torch's threads (a GPU)
    slide_workers: int = 0
    slide_threads: int | None = 1

    def to_dict(self) -> dict:
        return asdict(self)


#: :class:`StudySettings` of each profile.
SETTINGS: dict[str, StudySettings] = {
    "smoke": StudySettings(multirater_fovs=4, bootstrap_resamples=100, em_realisations=5, roster_spread_rosters=2,
                           patch_epochs=3, patch_repeats=1, plan_workers=1, plan_threads=1,
                           tree_min_leaf_share=0.005),
    "cpu": StudySettings(multirater_fovs=24, bootstrap_resamples=1000, em_realisations=100, roster_spread_rosters=10,
                         patch_epochs=12, patch_repeats=1, plan_workers=2, plan_threads=1,
                         tree_min_leaf_share=0.005, expected_min_ap50=0.5, slide_workers=2),
    "paper": StudySettings(multirater_fovs=54, bootstrap_resamples=1000, em_realisations=1000,
                           roster_spread_rosters=20, patch_epochs=12, patch_repeats=3, plan_workers=1,
                           plan_threads=None, tree_min_leaf_share=None, expected_min_ap50=0.5, slide_threads=None),
}


def settings(profile: str) -> StudySettings:
    """The :class:`StudySettings` of ``profile``."""
    return SETTINGS[check_profile(profile)]


# ---------------------------------------------------------------------------------------------------------------
# All of it side by side
# ---------------------------------------------------------------------------------------------------------------


def table():
    """Every setting of every stage, one row each: ``stage, setting, smoke, cpu, paper`` (a DataFrame; the stage
    configs are built by their modules, so this imports torch)."""
    import importlib

    import pandas as pd

    rows = []
    for stage, (module, registry) in _STAGE_CLASSES.items():
        reg = getattr(importlib.import_module(module), registry)
        fields = {p: asdict(reg[p]) for p in PROFILE_NAMES}
        for name in fields[PROFILE_NAMES[0]]:
            rows.append({"stage": stage, "setting": name, **{p: fields[p][name] for p in PROFILE_NAMES}})
    for name in asdict(SETTINGS[PROFILE_NAMES[0]]):
        rows.append({"stage": "notebooks", "setting": name, **{p: getattr(SETTINGS[p], name) for p in PROFILE_NAMES}})
    out = pd.DataFrame(rows)
    same = out[list(PROFILE_NAMES)].map(repr).nunique(axis=1) == 1
    return out.assign(differs=~same)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m nucls_utils.profiles",
                                 description="Print every setting of every stage for the smoke, cpu and paper profiles.")
    ap.add_argument("--all", action="store_true", help="also the settings that are the same in every profile")
    args = ap.parse_args(argv)
    t = table()
    if not args.all:
        t = t[t["differs"]]
    print(t.drop(columns="differs").to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
