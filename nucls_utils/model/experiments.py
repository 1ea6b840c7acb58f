"""The paper's model experiments as data: which model, trained on what, tested where (notebooks 05 and 06).

* Table 1: the final model (config 3) on every internal-external CV fold (test = held-out hospitals).
* Table S5: classification ablations on fold 1 (configs 1, 2, 3, 4, 6).
* Table S3: scale factor on fold 1 (ResNet-18).
* Table S6: the final model trained on the *uncorrected* single-rater data, tested on corrected data.

:func:`run_experiment` trains (or reuses) one model and stores its predictions on the fold's test FOVs (and on the
multi-rater E FOVs of the test hospitals, for the P-truth half of Table 1) as ``predictions_<testset>.npz``;
notebook 06 only evaluates stored predictions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.atomic import atomic_path
from .architecture import MODEL_CONFIGS, ModelConfig
from .detections import Detections
from .train import TrainConfig, profile_configs

__all__ = ["Experiment", "experiment_plan", "save_predictions", "load_predictions", "run_experiment", "run_plan",
           "plan_parallelism", "PLAN_FILE", "save_plan", "load_plan", "fold_split", "FOLD_TEST_TABLE_NOTE", "paper_profile_check"]

#: Records the experiment's key and the sha256 of its stored predictions (see :func:`run_experiment`).
EXPERIMENT_MANIFEST = "experiment_manifest.json"
FOLD_TEST_TABLE_NOTE = "fold 1 is the validation fold (used for tuning); means are over folds 2-5"


@dataclass(frozen=True)
class Experiment:
    """One trained model of the study.

    ``config`` is the paper's configuration number (Table S5) as a string; ``'4'`` is config 2's detector with a
    decoupled thumbnail classifier (:mod:`.classifier`), reusing the config-2 model of the same fold.
    """

    name: str
    tables: tuple[str, ...]
    fold: int
    config: str
    model: ModelConfig
    training_data: str = "corrected"  # or 'uncorrected' (Table S6)
    detector_from: str | None = None  # config 4: name of the experiment whose detector is reused
    notes: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Experiment:
        """Inverse of :meth:`to_dict` (e.g. notebook 05's ``plan.json``)."""
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d["model"])
        d["tables"] = tuple(d["tables"])
        return cls(**d)


#: Notebook 05's plan, read by notebook 06 (:func:`save_plan`, :func:`load_plan`).
PLAN_FILE = "plan.json"


def save_plan(plan: Sequence[Experiment], stage_dir: str | os.PathLike[str]) -> Path:
    """Write notebook 05's plan to ``<stage_dir>/plan.json`` (atomically), for :func:`load_plan`."""
    path = Path(stage_dir) / PLAN_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps([e.to_dict() for e in plan], indent=2, default=str), encoding="utf-8")
    return path


def load_plan(stage_dir: str | os.PathLike[str]) -> list[Experiment]:
    """The plan :func:`save_plan` wrote to ``stage_dir`` (notebook 05's results folder).

    Raises FileNotFoundError when there is none (notebook 05 has not run into this output folder), ValueError naming
    the file and the entry when an entry is not an experiment.
    """
    path = Path(stage_dir) / PLAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained models: {path} does not exist; run notebook 05 first (same --out and "
                                "profile)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of experiments, not {type(entries).__name__}")
    plan = []
    for k, d in enumerate(entries):
        try:
            plan.append(Experiment.from_dict(d))
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{path}: entry {k} is not an experiment ({type(exc).__name__}: {exc})") from None
    return plan


def experiment_plan(profile: str, folds: Sequence[int] = (1, 2, 3, 4, 5), *,
                    weights: str | None = "imagenet") -> list[Experiment]:
    """The experiments a profile runs, in training order (config 4 after the config 2 it reuses).

    ``paper``: Table 1 and Table S6 on every fold; ablations (S3, S5) on fold 1, as the paper did. ``cpu`` and
    ``smoke``: Table 1 on every fold; Table S6 and the ablations on fold 1 only (a 2-core budget).
    ``weights``: the backbone's initial weights for every model ('imagenet' when torchvision can load them, None,
    or a path to ResNet-18 weights).
    """
    base, _ = profile_configs(profile)
    base = base.with_(weights=weights)
    folds = sorted(set(int(f) for f in folds))
    if 1 not in folds:
        raise ValueError("fold 1 (the validation fold) must be in the plan: the ablations run on it")
    plan: list[Experiment] = []
    for f in folds:
        tables = ("Table 1", "Table S5", "Table S3") if f == 1 else ("Table 1",)
        plan.append(Experiment(f"config3_fold{f}", tables, f, "3", base))
    for cfg in ("1", "2", "6"):
        plan.append(Experiment(f"config{cfg}_fold1", ("Table S5",), 1, cfg, base.with_(**MODEL_CONFIGS[cfg])))
    plan.append(Experiment("config4_fold1", ("Table S5",), 1, "4", base.with_(**MODEL_CONFIGS["2"]),
                           detector_from="config2_fold1",
                           notes="config 2's detector + an independent classifier on nucleus thumbnails"))
    # Table S3: the scale factor, with the profile's ResNet-18 truncation (base = the final model's factor)
    for sf in _scale_factors(profile, base.scale_factor):
        plan.append(Experiment(f"sf{sf:g}_fold1", ("Table S3",), 1, "3",
                               base.with_(scale_factor=sf, scale_jitter=round(0.1 * sf, 3))))
    s6_folds = folds if profile == "paper" else [1]
    for f in s6_folds:
        plan.append(Experiment(f"uncorrected_config3_fold{f}", ("Table S6",), f, "3", base,
                               training_data="uncorrected"))
    return plan


def _scale_factors(profile: str, final: float) -> list[float]:
    """Scale factors of Table S3 other than the final model's (which is the config-3 fold-1 model)."""
    if profile == "paper":
        return [1.0, 2.67]
    return [1.0] if final != 1.0 else [0.5]


def fold_split(assignment: pd.DataFrame, fold: int, slides: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indices of ``slides`` (one per FOV) in the training and the test set of ``fold``."""
    fold_of = dict(zip(assignment["slide_name"], assignment["fold"], strict=True))
    missing = sorted({s for s in slides if s not in fold_of})
    if missing:
        raise ValueError(f"slide(s) {missing[:3]} have no fold in the fold assignment")
    test = [i for i, s in enumerate(slides) if fold_of[s] == fold]
    train = [i for i, s in enumerate(slides) if fold_of[s] != fold]
    if not test:
        raise ValueError(f"fold {fold} has no FOV in this dataset")
    return train, test


# ---------------------------------------------------------------------------------------------------------------
# Stored predictions
# ---------------------------------------------------------------------------------------------------------------
def save_predictions(path: str | Path, names: Sequence[str], detections: Sequence[Detections]) -> None:
    """Write the detections of several images to one ``.npz`` (mask probabilities as float16)."""
    if len(names) != len(detections):
        raise ValueError(f"{len(names)} names but {len(detections)} detection sets")
    classes = detections[0].classes if detections else ()
    counts = np.array([len(d) for d in detections], dtype=np.int64)
    allc = Detections.concat(list(detections), classes) if detections else None
    payload = {
        "names": np.asarray(list(names), dtype=object).astype(str), "counts": counts,
        "classes": np.asarray(classes, dtype=str),
        "boxes": allc.boxes if allc is not None else np.zeros((0, 4), np.float32),
        "scores": allc.scores if allc is not None else np.zeros(0, np.float32),
        "probs": allc.probs if allc is not None else np.zeros((0, 0), np.float32),
        "mask_probs": (allc.mask_probs.astype(np.float16) if allc is not None and allc.mask_probs is not None
                       else np.zeros((0, 28, 28), np.float16)),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)


def load_predictions(path: str | Path) -> dict[str, Detections]:
    """``{image name: Detections}`` from :func:`save_predictions`."""
    with np.load(path, allow_pickle=False) as z:
        names, counts, classes = list(z["names"]), z["counts"], tuple(str(c) for c in z["classes"])
        boxes, scores, probs = z["boxes"], z["scores"], z["probs"]
        masks = z["mask_probs"].astype(np.float32)
    out, start = {}, 0
    for name, n in zip(names, counts, strict=True):
        sl = slice(start, start + int(n))
        out[str(name)] = Detections(boxes[sl], scores[sl], probs[sl].reshape(-1, len(classes)), classes,
                                    masks[sl] if len(masks) else None)
        start += int(n)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Running one experiment
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ExperimentData:
    """Everything an experiment reads: FOV samples of each single-rater variant, folds, and optional extra test
    sets (``{'E': (samples, truths)}``: images of multi-rater FOVs with their P-truth)."""

    samples: dict[str, list]  # 'corrected' / 'uncorrected' -> list[FovSample]
    assignment: pd.DataFrame
    extra_tests: dict[str, list] = field(default_factory=dict)  # name -> list[FovSample]


def run_experiment(exp: Experiment, data: ExperimentData, out_root: str | Path, *, profile: str,
                   train_config: TrainConfig | None = None, seed: int = 0, progress: bool = True,
                   curves: bool = False, device: str | None = None, classifier_config=None,
                   stop_after: int | None = None) -> dict:
    """Train (or reuse) the model of ``exp`` and store its predictions on the fold's test sets.

    Returns a summary dict (name, training seconds, seconds per update, weights source, test FOV counts, and
    ``reused``: whether the stored predictions were reused as they are).
    Outputs in ``out_root/<exp.name>/``: the training files of :func:`~.train.train_model`,
    ``predictions_test.npz`` (corrected single-rater test FOVs of the fold), ``predictions_<extra>.npz`` for
    each extra test set restricted to the fold's test slides, ``experiment.json`` and ``experiment_manifest.json``
    (a key over the experiment, schedule, seed, the training and test data and the detector it reuses, plus the
    sha256 of the prediction files). When that key is unchanged and every file still matches its hash, the
    experiment is not run again; otherwise the model is trained (or reused when its own key still matches, see
    :func:`~.train.train_model`) and the predictions are recomputed. ``classifier_config`` overrides the
    profile's thumbnail classifier (config 4) as ``train_config`` overrides its schedule. ``stop_after``: see
    :func:`~.train.train_model` (raises :class:`~.train.TrainingStopped`).
    """
    from ..io.manifest import read_manifest_json, verify_manifest, write_manifest
    from .data import (
        TrainingStream,
        classification_loss_weights,
        fov_sampling_weights,
        model_classes,
        samples_fingerprint,
    )
    from .train import MODEL_MANIFEST, config_key, train_model

    out = Path(out_root) / exp.name
    out.mkdir(parents=True, exist_ok=True)
    _, default_train = profile_configs(profile)
    tcfg = train_config or default_train
    if exp.training_data not in data.samples:
        raise FileNotFoundError(f"{exp.name}: no '{exp.training_data}' single-rater data in this dataset")
    train_pool = data.samples[exp.training_data]
    test_pool = data.samples["corrected"]
    tr_idx, _ = fold_split(data.assignment, exp.fold, [s.slide for s in train_pool])
    _, te_idx = fold_split(data.assignment, exp.fold, [s.slide for s in test_pool])
    train = [train_pool[i] for i in tr_idx]
    test = [test_pool[i] for i in te_idx]
    classes = model_classes(exp.model.level)
    test_sets = {"test": test}
    test_slides = {s.slide for s in test}
    for name, pool in data.extra_tests.items():
        test_sets[name] = [s for s in pool if s.slide in test_slides]
    train_fp = samples_fingerprint(train)
    detector = None
    if exp.detector_from is not None:
        detector = read_manifest_json(Path(out_root) / exp.detector_from / MODEL_MANIFEST)
    clf_part = {} if classifier_config is None else {"classifier": asdict(classifier_config)}
    exp_key = config_key(exp.to_dict(), tcfg, seed, {"train": train_fp, "curves": bool(curves), **clf_part,
                         "tests": {k: samples_fingerprint(v) for k, v in sorted(test_sets.items())},
                         "detector": detector})
    problem = verify_manifest(out, name=EXPERIMENT_MANIFEST, expect={"key": exp_key}, allow_extra=True)
    if problem is None:
        summary = json.loads((out / "experiment.json").read_text())
        return {**summary, "reused": True}
    if (out / EXPERIMENT_MANIFEST).exists():
        print(f"{exp.name}: stored predictions cannot be reused ({problem}): running it again")

    if exp.detector_from is not None:  # config 4: reuse a detector, train a thumbnail classifier
        from .classifier import classify_detections, train_thumbnail_classifier
        from .train import load_trained

        detector = load_trained(Path(out_root) / exp.detector_from, device=device)
        clf, clf_info = train_thumbnail_classifier(train, out, profile=profile, config=classifier_config, seed=seed,
                                                   progress=progress)

        def predict(rgb):
            return classify_detections(clf, rgb, detector.predict(rgb))
        info = {"seconds": clf_info["seconds"], "seconds_per_update": clf_info["seconds_per_update"],
                "weights_source": detector.weights_source}
    else:
        weights = fov_sampling_weights(train, level=exp.model.level)
        stream = TrainingStream(train, weights, batch_size=tcfg.batch_size, crop=tcfg.crop, classes=classes,
                                seed=seed, augment=tcfg.augment)
        evaluate = _curve_evaluator(test) if curves and tcfg.eval_every else None
        cw = classification_loss_weights(train, weights, level=exp.model.level, power=tcfg.class_balance) \
            if tcfg.class_balance else None
        model, history = train_model(exp.model, tcfg, stream, out, seed=seed, evaluate=evaluate,
                                     progress=progress, desc=exp.name, device=device, class_weights=cw,
                                     data_fingerprint=train_fp, stop_after=stop_after)
        tinfo = json.loads((out / "training.json").read_text())
        predict = model.predict
        info = {"seconds": tinfo["seconds_this_run"], "seconds_per_update": tinfo["seconds_per_update"],
                "weights_source": tinfo["weights_source"]}

    counts = {}
    for name, samples in test_sets.items():
        dets = [predict(s.rgb) for s in samples]
        save_predictions(out / f"predictions_{name}.npz", [s.name for s in samples], dets)
        counts[name] = len(samples)
    summary = {"name": exp.name, "fold": exp.fold, "config": exp.config, "tables": list(exp.tables),
               "training_data": exp.training_data, "n_train_fovs": len(train), "n_test_fovs": counts, **info,
               "experiment": exp.to_dict()}
    with atomic_path(out / "experiment.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, default=str))
    write_manifest(out, {"key": exp_key}, name=EXPERIMENT_MANIFEST,
                   files=["experiment.json", *(f"predictions_{n}.npz" for n in test_sets)])
    return {**summary, "reused": False}


def plan_parallelism(profile: str, device: str | None = None) -> tuple[int, int | None]:
    """``(workers, threads)`` of a profile's plan (``plan_workers``, ``plan_threads`` of
    :class:`nucls_utils.profiles.StudySettings`: every experiment runs with the same thread count whatever the
    number of workers, so its numbers do not depend on the parallelism, since torch's float results depend on the
    thread count); one worker on a GPU, which it fills."""
    from ..profiles import settings

    s = settings(profile)
    return (1 if device == "cuda" else s.plan_workers), s.plan_threads


def _run_with_threads(threads: int | None, exp: Experiment, data: ExperimentData, out_root, kwargs: dict) -> dict:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return run_experiment(exp, data, out_root, **kwargs)
    finally:
        torch.set_num_threads(before)


def _run_after(_detector_done, threads: int | None, exp: Experiment, data: ExperimentData, out_root,
               kwargs: dict) -> dict:
    """A Dask task: :func:`_run_with_threads` once the experiment whose detector ``exp`` reuses is done."""
    return _run_with_threads(threads, exp, data, out_root, kwargs)


def _run_plan_on_dask(plan: Sequence[Experiment], data: ExperimentData, out_root, threads: int | None,
                      scheduler: str, job_kwargs, progress: bool) -> dict[str, dict]:
    """One Dask task per experiment on the cluster at ``scheduler`` (``local:N``: a local cluster of N workers).
    A GPU experiment asks for the worker resource ``GPU=1`` (start GPU workers with ``--resources GPU=1``)."""
    import uuid

    from distributed import as_completed

    from ..progress import tqdm
    from ..wsi.cluster import dask_client

    local = scheduler.startswith("local:")
    gpu = job_kwargs(plan[0]).get("device") == "cuda" if plan else False
    resources = {"GPU": 1} if gpu else None
    # a local cluster on a GPU machine: one worker, which takes the experiments one at a time, as in process
    n_local = (1 if gpu else int(scheduler.split(":", 1)[1])) if local else 0
    cluster_kw = {"workers": n_local, "threads": threads, "resources": resources} if local else {"scheduler": scheduler}
    run_id = uuid.uuid4().hex[:8]  # task keys unique on a scheduler shared with other clients
    results: dict[str, dict] = {}
    with dask_client(**cluster_kw) as client:
        data_f = client.scatter(data, broadcast=True)
        futures: dict[str, object] = {}
        for exp in plan:
            dep = futures.get(exp.detector_from) if exp.detector_from else None
            futures[exp.name] = client.submit(_run_after, dep, threads, exp, data_f, str(out_root), job_kwargs(exp),
                                              key=f"experiment-{exp.name}-{run_id}", pure=False,
                                              resources=resources)
        bar = tqdm(total=len(plan), desc="experiments", disable=not progress)
        for fut in as_completed(list(futures.values())):
            res = fut.result()  # an experiment's error stops the plan here
            results[res["name"]] = res
            bar.update(1)
            bar.set_postfix_str(res["name"])
        bar.close()
    return results


def run_plan(plan: Sequence[Experiment], data: ExperimentData, out_root: str | Path, *, profile: str,
             workers: int | None = None, threads: int | None = -1, progress: bool = True,
             curves: Sequence[str] = (), scheduler: str | None = None, **kwargs) -> list[dict]:
    """Run every experiment of ``plan`` (:func:`run_experiment`), ``workers`` at a time; summaries in plan order.

    ``workers`` and ``threads`` default to :func:`plan_parallelism` (``threads=None``: torch's default). With more
    than one worker, experiments run in spawned processes, each with ``threads`` torch threads; an experiment that
    reuses another's detector (config 4) starts when that one is done. Models and predictions are the same as with
    one worker and the same ``threads``. ``curves``: names of the experiments evaluated during training (Fig. S10).

    ``scheduler``: run the experiments as tasks of a Dask cluster instead, one task per experiment, the detector
    dependency as a task dependency: the address of an existing scheduler (``tcp://host:8786``; its workers must
    see ``out_root``; GPU workers started with ``--resources GPU=1`` take the ``device="cuda"`` experiments one at
    a time each), or ``local:N`` for a local cluster of N worker processes. Same models and predictions as in
    process, with the same ``threads`` (tests/test_paper_check.py). Other keyword arguments go to
    :func:`run_experiment`.
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    from ..progress import tqdm

    dflt_workers, dflt_threads = plan_parallelism(profile, kwargs.get("device"))
    workers = dflt_workers if workers is None else int(workers)
    threads = dflt_threads if threads == -1 else threads
    names = [e.name for e in plan]
    for e in plan:
        if e.detector_from is not None and e.detector_from in names and names.index(e.detector_from) > names.index(e.name):
            raise ValueError(f"{e.name} reuses the detector of {e.detector_from}, which comes later in the plan")

    def job_kwargs(exp: Experiment) -> dict:
        return {**kwargs, "profile": profile, "curves": exp.name in curves,
                "progress": progress and workers == 1}

    if scheduler:
        results = _run_plan_on_dask(plan, data, out_root, threads, scheduler,
                                    lambda exp: {**job_kwargs(exp), "progress": False}, progress)
        return [results[n] for n in names]
    results: dict[str, dict] = {}
    bar = tqdm(total=len(plan), desc="experiments", disable=not progress or workers == 1)
    if workers <= 1:
        for exp in plan:
            results[exp.name] = _run_with_threads(threads, exp, data, out_root, job_kwargs(exp))
    else:
        waiting = list(plan)
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            running: dict = {}
            while waiting or running:
                for exp in list(waiting):
                    dep = exp.detector_from
                    if dep is None or dep not in names or dep in results:
                        running[pool.submit(_run_with_threads, threads, exp, data, out_root, job_kwargs(exp))] = exp
                        waiting.remove(exp)
                if not running:
                    raise RuntimeError(f"experiments {[e.name for e in waiting]} wait on detectors that never ran")
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    exp = running.pop(fut)
                    results[exp.name] = fut.result()  # an experiment's error stops the plan here
                    bar.update(1)
                    bar.set_postfix_str(exp.name)
    bar.close()
    return [results[n] for n in names]


def _curve_evaluator(test: list):
    """Metrics for the training curves (Fig. S10): detection AP@.5 and classification on the test FOVs."""
    from ..evaluation import evaluate_model
    from .data import eval_truth

    truths = [eval_truth(s) for s in test]

    def evaluate(model) -> dict:
        preds = [model.predict(s.rgb).to_eval() for s in test]
        r = evaluate_model(truths, preds)
        return {k: r[k] for k in ("ap50", "map", "main_mcc", "super_mcc", "main_auroc_micro", "super_auroc_micro")
                if k in r}

    return evaluate


def _stored_predictions(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("predictions_*.npz"))}


#: What :func:`paper_profile_check` may also train uninterrupted (its ``compare``; the CLI's ``--compare``).
COMPARE_CHOICES: tuple[str, ...] = ("configs", "all", "none")


def _check_compare(compare: str) -> None:
    if compare not in COMPARE_CHOICES:
        raise ValueError(f"compare must be one of {', '.join(map(repr, COMPARE_CHOICES))}, not {compare!r}")


def _compared_experiments(plan: Sequence[Experiment], compare: str) -> list[str]:
    """Names of the experiments :func:`paper_profile_check` also trains uninterrupted (see its ``compare``)."""
    _check_compare(compare)
    trained = [e for e in plan if e.detector_from is None]  # config 4 trains no update of a detector
    if compare == "all":
        return [e.name for e in trained]
    if compare == "none":
        return []
    first: dict[str, str] = {}
    for e in trained:
        first.setdefault(e.config, e.name)
    return list(first.values())


def paper_profile_check(data_dir: str | Path, out_dir: str | Path, *, max_updates: int = 2, fovs_per_hospital: int = 1,
                        test_fovs: int | None = 1, compare: str = "configs", seed: int = 0, profile: str = "paper",
                        progress: bool = False, say=print) -> pd.DataFrame:
    """Exercise the ``paper`` profile's code path without a GPU: every experiment of notebook 05's paper plan.

    Each model (the paper's architecture and schedule, its backbone start from
    :func:`~.pretrain.resolve_start`) is stopped as a killed run after its first update (checkpoint kept, no final
    weights; :class:`~.train.TrainingStopped`), then run again, which must resume from the checkpoint
    (``max_updates - 1`` updates left), finish, predict its test FOVs and be evaluated; config 4 trains its
    thumbnail classifier for ``max_updates`` updates on config 2's detector. Experiments named by ``compare`` are
    also trained uninterrupted, and the resumed run's stored predictions must be byte-identical to that run's:
    ``"configs"`` (the first experiment of each trained architecture: configs 3, 1, 2 and 6 of Table S5), ``"all"``
    or ``"none"``.

    ``data_dir`` is a single-rater dataset (e.g. a synthetic cohort; it stands for both the corrected and the
    uncorrected data), cut to ``fovs_per_hospital`` FOVs of each hospital; folds are
    :func:`~nucls_utils.io.folds.hospital_kfold` (5, or one per hospital when there are fewer). Each experiment
    predicts only the first ``test_fovs`` FOVs of its test fold (``None``: all): one paper-profile prediction takes
    tens of seconds on a CPU. ``profile`` is ``"paper"`` for the check itself; the tests run the same procedure on the
    ``smoke`` profile.

    Returns one row per experiment: updates, seconds (the resumed run's), updates after the resume, whether the
    predictions equal the uninterrupted run's (``None``: not compared), the weights source and AP@.5 on its test FOVs
    (meaningless after 2 updates; it shows that evaluation runs).
    """
    from ..evaluation import evaluate_model
    from ..io.dataset import read_dataset
    from ..io.folds import hospital_kfold
    from .classifier import classifier_config as clf_profile
    from .data import eval_truth, load_fov_samples
    from .pretrain import resolve_start
    from .train import TrainingStopped

    if max_updates < 2:
        raise ValueError("max_updates must be >= 2 (one update before the simulated kill, one after)")
    _check_compare(compare)  # before anything is loaded
    records, seen = [], {}
    for r in read_dataset(data_dir):
        if seen.get(r.hospital, 0) < fovs_per_hospital:
            seen[r.hospital] = seen.get(r.hospital, 0) + 1
            records.append(r)
    samples = load_fov_samples(records, progress=False)
    n_folds = min(5, len({s.hospital for s in samples}))  # a small cohort (smoke: 3 hospitals) has fewer folds
    assignment = hospital_kfold([s.slide for s in samples], n_folds=n_folds, seed=seed)
    fold_of = dict(zip(assignment["slide_name"], assignment["fold"], strict=True))

    def fold_data(fold: int) -> ExperimentData:  # the training FOVs of ``fold`` and the first test_fovs of its test
        test = {s.name for s in [s for s in samples if fold_of[s.slide] == fold][:test_fovs]}
        pool = [s for s in samples if fold_of[s.slide] != fold or s.name in test]
        return ExperimentData(samples={"corrected": pool, "uncorrected": pool}, assignment=assignment)

    start = resolve_start(profile, "", progress=progress, say=say)
    plan = experiment_plan(profile, sorted(assignment["fold"].unique()), weights=start)
    _, schedule = profile_configs(profile)
    tcfg = schedule.with_(iterations=max_updates, freeze_detection_at=max_updates - 1,
                          checkpoint_every=max_updates, eval_every=0)
    ccfg = clf_profile(profile).with_(iterations=max_updates)
    out_dir = Path(out_dir)
    kw = dict(profile=profile, train_config=tcfg, seed=seed, progress=progress, device="cpu",
              classifier_config=ccfg)
    by_name = {x.name: x for x in samples}
    compared = _compared_experiments(plan, compare)
    rows = []
    for exp in plan:
        data = fold_data(exp.fold)
        resumed, same = None, None
        if exp.detector_from is None:
            try:
                run_experiment(exp, data, out_dir, stop_after=1, **kw)
            except TrainingStopped:
                pass
            else:
                raise AssertionError(f"{exp.name}: training was not stopped after its first update")
            if (out_dir / exp.name / "model.pt").exists() or not (out_dir / exp.name / "checkpoint.pt").is_file():
                raise AssertionError(f"{exp.name}: the stopped run did not leave a checkpoint alone")
        run = run_experiment(exp, data, out_dir, **kw)
        if exp.detector_from is None:
            resumed = json.loads((out_dir / exp.name / "training.json").read_text())["iterations_this_run"]
        if exp.name in compared:
            run_experiment(exp, data, out_dir / "uninterrupted", **kw)
            same = _stored_predictions(out_dir / exp.name) == _stored_predictions(out_dir / "uninterrupted" / exp.name)
        preds = load_predictions(out_dir / exp.name / "predictions_test.npz")
        ap = evaluate_model([eval_truth(by_name[n]) for n in preds], [d.to_eval() for d in preds.values()])["ap50"]
        rows.append({"experiment": exp.name, "fold": exp.fold, "config": exp.config, "updates": max_updates,
                     "updates_after_resume": resumed, "same_predictions_after_resume": same,
                     "seconds": round(run["seconds"], 1), "seconds_per_update": round(run["seconds_per_update"], 2),
                     "weights_source": run["weights_source"], "n_test_fovs": run["n_test_fovs"]["test"],
                     "ap50_test": round(float(ap), 4)})
        if say is not None:
            say(f"{exp.name}: {rows[-1]}")
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    """``python -m nucls_utils.model.experiments paper-check --data DIR --out DIR [--max-updates 2]``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m nucls_utils.model.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    pc = sub.add_parser("paper-check", help=paper_profile_check.__doc__.splitlines()[0])
    pc.add_argument("--data", required=True, help="a single-rater dataset (e.g. data/synthetic/cpu)")
    pc.add_argument("--out", required=True, help="where the models and predictions go")
    pc.add_argument("--max-updates", type=int, default=2)
    pc.add_argument("--fovs-per-hospital", type=int, default=1)
    pc.add_argument("--test-fovs", type=int, default=1, help="test FOVs predicted per experiment (0: all)")
    pc.add_argument("--compare", choices=COMPARE_CHOICES, default="configs",
                    help="experiments also trained uninterrupted to compare predictions with (default: the first of "
                         "each architecture)")
    args = parser.parse_args(argv)
    table = paper_profile_check(args.data, args.out, max_updates=args.max_updates,
                                fovs_per_hospital=args.fovs_per_hospital, test_fovs=args.test_fovs or None,
                                compare=args.compare, say=lambda line: print(line, file=sys.stderr, flush=True))
    print(table.to_markdown(index=False))
    return 0 if (table["same_predictions_after_resume"] != False).all() else 1  # noqa: E712 (None: not compared)


if __name__ == "__main__":
    raise SystemExit(main())
