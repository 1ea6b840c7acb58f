"""Notebook 08's driver: the seeds' systems trained on the study's hospital folds and scored beside the NuCLS model.

Every system learns from the same corrected single-rater annotations the NuCLS model learns from (notebook 05),
reduced to the kind of label the system uses, and is tested on the same held-out FOVs:

=====================  ===========================================  ==========================================
system                 label it learns from                         what is counted as annotation effort
=====================  ===========================================  ==========================================
heuristic bootstrap    none (notebook 02's segmentation)            0
pretrained detector    none of this cohort (the models' start)      0 (its own cohort was fully labelled)
Cyclic Learning (004)  image-level: does a tile hold a nucleus?     one yes/no per tile
tile classifier (002)  tile-level: the same, at nucleus scale       one yes/no per labelled (not withheld) tile
U-Net small/full (003) pixel masks: the traced boundaries           one outline per traced nucleus
NuCLS (notebook 05)    crowd boxes + clicked boundaries             one box per nucleus (+ the clicked outlines)
=====================  ===========================================  ==========================================

A nucleus the crowd gave only a box has no pixel mask: the U-Nets leave its box out of their loss
(:func:`~.unet.train_unet`'s ``ignore``); the tile labels and the image-level labels read it as its filled box.

**Scoring** (:func:`score_predictions`), per test set, with :mod:`nucls_utils.evaluation`'s one definition of each
metric: AP@.5 (COCO, ambiguous nuclei as crowd), pixel Dice of the nuclei mask (pixels pooled over the FOVs), AJI and
panoptic quality (mean over FOVs), the count deviation (mean over FOVs of ``|predicted - true| / true`` in %) and the
object-level F1 at IOU > 0.5. Every prediction is an instance label image plus scored boxes (:class:`FovPrediction`):
a probability map becomes instances by a distance-transform watershed (:func:`~.unet.count_nuclei`) with the mean
probability as score; detections are painted with score >= 0.5 and keep all their boxes for AP. Truth label images
paint each nucleus's mask: the traced boundary, or the filled box where the crowd gave only a box (the corrected
truth); the generator's truth has an exact outline for every nucleus.

**Cyclic Learning** (:func:`run_cyclic`): the front end (:mod:`.cyclic`) learns the image-level labels; the LRP
relevance of each positive tile, scaled to its own maximum and merged over overlapping tiles by the maximum, is cut
at the authors' 0.1 into pseudo nuclei; the back end, the project's Mask R-CNN (the profile's architecture, from the
NuCLS model's own start, ``back_end_start='detector'``: in the cpu profile the detector pretrained on a separate,
fully labelled synthetic cohort, whose score alone is the ladder's "pretrained detector" row), trains on them; each
later cycle trains a fresh back end on the previous back end's confident detections (score >= ``feedback_score``) plus
the front end's pseudo nuclei that no detection covers. The seed's text (an abstract) does not
say more of how knowledge flows back; this is our reading, stated in the notebook.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .. import taxonomy as tx
from ..evaluation import aggregated_jaccard_index as aji
from ..evaluation import coco_detection_ap, f1_from_counts, instance_overlaps, panoptic_quality
from ..profiles import stage_settings
from . import cyclic as cy
from . import tile_classifier as tc
from . import unet as un

__all__ = ["BaselineSettings", "BASELINE_PROFILES", "FovPrediction", "label_image", "from_probability",
           "from_detections", "from_instances", "score_predictions", "tile_training_set", "run_tile_classifier",
           "tile_f1_on", "run_unet", "run_cyclic", "pseudo_sample", "SYSTEMS", "ladder_table", "seed_paper_vs_run",
           "PSEUDO_CLASS", "BaselineRun", "LadderResult", "run_ladder", "score_transfer", "bootstrap_run", "nucls_run",
           "relevance_map", "pretrained_detector_run"]

#: The class the Cyclic back end's pseudo nuclei carry: image-level labels say nothing of class, and the back end is
#: scored class-agnostically (detection and segmentation only).
PSEUDO_CLASS = tx.MAIN_CLASSES[0]


@dataclass(frozen=True)
class BaselineSettings:
    """The baselines' settings of one profile (:data:`nucls_utils.profiles.STAGES` ``['baselines']``)."""

    folds: tuple[int, ...] = (1, 2, 3, 4, 5)
    tile: tc.TileClassifierConfig = field(default_factory=tc.TileClassifierConfig)
    tile_max: int | None = None  # training tiles per fold (stratified subsample; None: all)
    unet_small: un.UNetConfig = field(default_factory=lambda: un.UNetConfig(depth=3, base=64, iterations=5000))
    unet_full: un.UNetConfig = field(default_factory=lambda: un.UNetConfig(depth=5, base=64, iterations=5000,
                                                                           crop=256))
    front_end: cy.FrontEndConfig = field(default_factory=cy.FrontEndConfig)
    front_tile: int = 64  # px: the front end's tiles (12.8 microns, a few nuclei)
    front_positive_fraction: float = 0.02  # a tile with at least this share of nucleus pixels is positive
    front_max: int | None = None  # front-end training tiles per fold (None: all)
    cyclic_fovs: int | None = None  # training FOVs the back end learns from (None: all)
    cycles: int = 5  # the authors'
    back_end_iterations: int = 2000
    # the back end's start: 'detector' = the NuCLS model's own start (with a synthetic-pretrained trunk, the detector
    # pretrained with it on a separate, fully labelled synthetic cohort; else the trunk alone), 'trunk' = the trunk only
    back_end_start: str = "detector"
    feedback_score: float = 0.5  # detections fed to the next cycle
    transfer_fovs: int | None = None  # real FOVs the transfer test scores (None: all; the smoke profile a few)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, **kw) -> BaselineSettings:
        """From :data:`~nucls_utils.profiles.STAGES` keyword arguments (the networks' settings as dicts)."""
        kinds = {"tile": tc.TileClassifierConfig, "unet_small": un.UNetConfig, "unet_full": un.UNetConfig,
                 "front_end": cy.FrontEndConfig}
        return cls(**{k: kinds[k](**v) if k in kinds else (tuple(v) if k == "folds" else v) for k, v in kw.items()})


#: The baselines' settings of each profile.
BASELINE_PROFILES: dict[str, BaselineSettings] = {p: BaselineSettings.from_kwargs(**kw)
                                                  for p, kw in stage_settings("baselines").items()}


# ---------------------------------------------------------------------------------------------------------------
# truth and predictions as label images
# ---------------------------------------------------------------------------------------------------------------
def label_image(sample) -> tuple[np.ndarray, np.ndarray]:
    """A FOV sample's truth as ``(labels, unknown)``: the ``(H, W)`` int32 label image (nucleus ``i`` painted as
    ``i + 1`` from its box-local mask, later nuclei on top) and the bool map of pixels whose label the annotation does
    not give (the boxes of nuclei annotated by a box only, less any traced nucleus's pixels)."""
    h, w = sample.rgb.shape[:2]
    labels = np.zeros((h, w), dtype=np.int32)
    unknown = np.zeros((h, w), dtype=bool)
    for i, (box, m) in enumerate(zip(sample.boxes, sample.masks, strict=True)):
        x0, y0, x1, y1 = (int(v) for v in box)
        labels[y0:y1, x0:x1][np.asarray(m, dtype=bool)] = i + 1
        if not sample.ismask[i]:
            unknown[y0:y1, x0:x1] = True
    for i in np.flatnonzero(sample.ismask):
        x0, y0, x1, y1 = (int(v) for v in sample.boxes[i])
        unknown[y0:y1, x0:x1][np.asarray(sample.masks[i], dtype=bool)] = False
    return labels, unknown


@dataclass
class FovPrediction:
    """One FOV's prediction: the instance label image (pixel scores, AJI, PQ, counts) and scored boxes (AP)."""

    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def _instance_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids and ``(xmin, ymin, xmax, ymax)`` pixel-corner boxes of the instances of a label image."""
    ids, boxes = [], []
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        ids.append(i)
        boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return np.asarray(ids, dtype=int), np.asarray(boxes, dtype=float).reshape(-1, 4)


def from_probability(prob: np.ndarray, threshold: float = 0.5, min_distance: int = 5, min_size: int = 20
                     ) -> FovPrediction:
    """Instances of a nucleus probability map: ``prob >= threshold`` split by :func:`~.unet.count_nuclei`; each
    instance's score is its mean probability."""
    p = np.nan_to_num(np.asarray(prob, dtype=np.float64), nan=0.0)
    labels = un.count_nuclei(p >= threshold, min_distance, min_size)
    ids, boxes = _instance_boxes(labels)
    scores = np.asarray(ndi.mean(p, labels, ids), dtype=float).reshape(-1) if len(ids) else np.zeros(0)
    return FovPrediction(labels, boxes, scores)


def from_detections(det, shape: tuple[int, int], score_threshold: float = 0.5) -> FovPrediction:
    """A :class:`~nucls_utils.model.detections.Detections`: painted with ``score >= score_threshold`` (most
    confident on top), all boxes kept for AP."""
    kept = det.select(det.scores >= score_threshold)
    return FovPrediction(kept.instance_map(shape), det.boxes.astype(float), det.scores.astype(float))


def from_instances(labels: np.ndarray) -> FovPrediction:
    """An unscored instance label image (e.g. the heuristic bootstrap's): every instance scores 1."""
    labels = np.asarray(labels, dtype=np.int32)
    _, boxes = _instance_boxes(labels)
    return FovPrediction(labels, boxes, np.ones(len(boxes)))


def _mean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there is none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else np.nan


def score_predictions(truth: Sequence, preds: dict[str, FovPrediction]) -> dict:
    """Score predictions against truth FOV samples (matched by name); see the module docstring. Fractions."""
    missing = [s.name for s in truth if s.name not in preds]
    if missing:
        raise KeyError(f"no prediction for {len(missing)} truth FOV(s), e.g. {missing[0]}")
    tp = fp = fn = 0
    ajis, pqs, sqs, rqs, devs = [], [], [], [], []
    obj_tp = n_true = n_pred = 0
    tb, ti, pb, ps = [], [], [], []
    for s in truth:
        p = preds[s.name]
        t_labels, _ = label_image(s)
        if p.labels.shape != t_labels.shape:
            raise ValueError(f"{s.name}: prediction is {p.labels.shape}, truth {t_labels.shape}")
        t, q = t_labels > 0, p.labels > 0
        tp += int((t & q).sum())
        fp += int((~t & q).sum())
        fn += int((t & ~q).sum())
        ajis.append(aji(t_labels, p.labels))
        pq = panoptic_quality(t_labels, p.labels)
        pqs.append(pq["pq"])
        sqs.append(pq["sq"])
        rqs.append(pq["rq"])
        ov = instance_overlaps(t_labels, p.labels)
        obj_tp += int((ov.iou > 0.5).sum())
        n_true += len(ov.true_ids)
        n_pred += len(ov.pred_ids)
        if len(ov.true_ids):
            devs.append(abs(len(ov.pred_ids) - len(ov.true_ids)) / len(ov.true_ids))
        tb.append(np.asarray(s.boxes, dtype=float).reshape(-1, 4))
        ti.append(np.asarray([c == tx.AMBIGUOUS for c in s.classes], dtype=bool))
        pb.append(p.boxes)
        ps.append(p.scores)
    ap = coco_detection_ap(tb, ti, pb, ps)
    return {"n_fovs": len(truth), "ap50": float(ap["ap50"]),
            "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan,
            "pixel_tp": tp / (tp + fn) if tp + fn else np.nan, "pixel_fp": fp / (tp + fn) if tp + fn else np.nan,
            "aji": _mean(ajis), "pq": _mean(pqs), "sq": _mean(sqs), "rq": _mean(rqs),
            "count_deviation": float(np.mean(devs)) if devs else np.nan,
            "object_f1": float(f1_from_counts(obj_tp, n_pred - obj_tp, n_true - obj_tp)),
            "true_nuclei": n_true, "pred_nuclei": n_pred}


# ---------------------------------------------------------------------------------------------------------------
# seed 002: the tile classifier
# ---------------------------------------------------------------------------------------------------------------
def _stratified_cap(labels: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``cap`` items, each label's share kept (all when ``cap`` is None or not reached)."""
    idx = np.arange(len(labels))
    if cap is None or len(idx) <= cap:
        return idx
    keep = []
    for c in np.unique(labels):
        members = idx[labels == c]
        n = max(1, int(round(cap * len(members) / len(idx))))
        keep.append(rng.choice(members, size=min(n, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def tile_training_set(samples: Sequence, tile: int, positive_fraction: float, cap: int | None,
                      rng: np.random.Generator, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tiles (stride half a tile) of the samples with their labels from the truth masks (1 nucleus, 0 none; the tiles
    in between are left out), at most ``cap`` of them, stratified."""
    tiles, labels = [], []
    for s in samples:
        h, w = s.rgb.shape[:2]
        corners = tc.tile_grid(h, w, tile, stride or tile // 2)
        if not len(corners):
            continue
        _, y = tc.tile_labels(label_image(s)[0] > 0, corners, tile, positive_fraction)
        keep = y >= 0
        tiles.append(tc.extract_tiles(s.rgb, corners[keep], tile))
        labels.append(y[keep])
    if not tiles:
        raise ValueError(f"no training FOV is at least {tile} px on each side")
    x, y = np.concatenate(tiles), np.concatenate(labels)
    keep = _stratified_cap(y, cap, rng)
    return x[keep], y[keep]


def tile_f1_on(model: tc.LeNetTiles, samples: Sequence, positive_fraction: float) -> dict:
    """Tile F1 (weighted, as seed 002 reports it, and of the nucleus class) on all labelled tiles of ``samples``."""
    x, y = tile_training_set(samples, model.tile, positive_fraction, None, np.random.default_rng(0))
    pred = (tc.predict_tiles(model, x) >= 0.5).astype(int)
    return {"tiles": len(y), "positive_share": float(np.mean(y)), "f1_weighted": tc.tile_f1(y, pred, "weighted"),
            "f1_positive": tc.tile_f1(y, pred, "positive")}


@dataclass
class BaselineRun:
    """A trained baseline: how it predicts a FOV, what it learned from, and what it cost."""

    system: str
    predict: Callable[[np.ndarray], FovPrediction]
    labels_used: int
    seconds: float
    info: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None


def run_tile_classifier(train: Sequence, settings: BaselineSettings, *, seed: int = 0) -> BaselineRun:
    """Seed 002 on the training FOVs: tiles labelled from the corrected masks, the seed's pseudo-labelling, and the
    sliding-window mask as prediction."""
    cfg = settings.tile
    t0 = time.perf_counter()
    x, y = tile_training_set(train, cfg.tile, cfg.positive_fraction, settings.tile_max, np.random.default_rng(seed))
    model, rounds = tc.fit_with_pseudo_labels(x, y, cfg, seed=seed)
    seconds = time.perf_counter() - t0
    return BaselineRun("tile classifier", lambda rgb: from_probability(tc.probability_map(model, rgb)),
                       labels_used=int(rounds["labelled"].iloc[0]), seconds=seconds,
                       info={"model": model, "tiles": len(y), "withheld": int(rounds["withheld"].iloc[0]),
                             "positive_share": float(np.mean(y))}, history=rounds)


# ---------------------------------------------------------------------------------------------------------------
# seed 003: the U-Nets
# ---------------------------------------------------------------------------------------------------------------
def run_unet(train: Sequence, cfg: un.UNetConfig, name: str, *, seed: int = 0) -> BaselineRun:
    """Seed 003's U-Net on the training FOVs' traced boundaries (box-only nuclei left out of the loss)."""
    t0 = time.perf_counter()
    usable = [s for s in train if min(s.rgb.shape[:2]) >= cfg.crop]
    if not usable:
        raise ValueError(f"no training FOV is at least {cfg.crop} px on each side")
    truths = [label_image(s) for s in usable]
    model, hist = un.train_unet([s.rgb for s in usable], [t[0] > 0 for t in truths], cfg,
                                ignore=[t[1] for t in truths], seed=seed)
    seconds = time.perf_counter() - t0
    return BaselineRun(name, lambda rgb: from_probability(un.predict_probability(model, rgb)),
                       labels_used=int(sum(int(np.sum(s.ismask)) for s in usable)), seconds=seconds,
                       info={"model": model}, history=hist)


# ---------------------------------------------------------------------------------------------------------------
# seed 004: Cyclic Learning
# ---------------------------------------------------------------------------------------------------------------
def relevance_map(model: cy.FrontEndCNN, rgb: np.ndarray, labels: np.ndarray, tile: int, cfg: cy.FrontEndConfig
                  ) -> np.ndarray:
    """The front end's relevance over a whole FOV: LRP of each positive tile (``labels`` 1; stride half a tile),
    its positive part scaled to the tile's maximum, merged over overlapping tiles by the maximum."""
    h, w = rgb.shape[:2]
    out = np.zeros((h, w), dtype=np.float64)
    corners = tc.tile_grid(h, w, tile, tile // 2)
    pos = corners[np.asarray(labels) == 1]
    if not len(pos):
        return out
    rel = np.clip(cy.lrp_relevance(model, tc.extract_tiles(rgb, pos, tile), gamma=cfg.gamma), 0, None)
    for (y, x), r in zip(pos, rel, strict=True):
        m = r.max()
        if m > 0:
            np.maximum(out[y:y + tile, x:x + tile], r / m, out=out[y:y + tile, x:x + tile])
    return out


def pseudo_sample(sample, labels: np.ndarray, min_side: int = 8):
    """A FOV sample whose nuclei are the instances of a label image (boxes, box-local masks, ``ismask`` True, class
    :data:`PSEUDO_CLASS`); instances with a side of ``min_side`` px or less are dropped."""
    from ..model.data import FovSample

    ids, boxes = _instance_boxes(labels)
    keep = ((boxes[:, 2] - boxes[:, 0]) > min_side) & ((boxes[:, 3] - boxes[:, 1]) > min_side)
    ids, boxes = ids[keep], boxes[keep].astype(np.int32)
    masks = [labels[y0:y1, x0:x1] == i for i, (x0, y0, x1, y1) in zip(ids, boxes, strict=True)]
    return FovSample(name=sample.name, hospital=sample.hospital, slide=sample.slide, rgb=sample.rgb, boxes=boxes,
                     classes=np.asarray([PSEUDO_CLASS] * len(ids), dtype=object),
                     ismask=np.ones(len(ids), dtype=bool), masks=masks, origin=sample.origin)


def _merge_feedback(detected: np.ndarray, front: np.ndarray) -> np.ndarray:
    """The back end's painted detections plus the front end's pseudo nuclei no detection touches."""
    out = detected.copy()
    untouched = np.setdiff1d(np.unique(front[front > 0]), np.unique(front[(front > 0) & (detected > 0)]))
    nxt = int(out.max()) + 1
    for k, i in enumerate(untouched):
        out[front == i] = nxt + k
    return out


def run_cyclic(train: Sequence, test: Sequence, truths_of_test: dict[str, Sequence], settings: BaselineSettings, *,
               profile: str, weights: str | None, out_dir: str | Path, seed: int = 0, progress: bool = True,
               say: Callable[[str], None] | None = print) -> tuple[BaselineRun, pd.DataFrame, dict]:
    """Cyclic Learning on the training FOVs (see the module docstring); each cycle's back end predicts the ``test``
    FOVs, scored against each truth of ``truths_of_test`` (``{name: samples}``, matched by FOV name).

    Returns the run of the last cycle's back end, one row per cycle and truth (its scores, plus the pseudo masks'
    Dice against the training truth), and ``{cycle: {fov: FovPrediction}}``."""
    from ..model.data import TrainingStream, model_classes, samples_fingerprint
    from ..model.train import MODEL_PROFILES, TRAIN_PROFILES, train_model
    from ..progress import tqdm

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    pool = list(train)
    if settings.cyclic_fovs is not None and len(pool) > settings.cyclic_fovs:
        pool = [pool[i] for i in np.sort(rng.choice(len(pool), settings.cyclic_fovs, replace=False))]
    tile, fe_cfg = settings.front_tile, settings.front_end
    x, y = tile_training_set(pool, tile, settings.front_positive_fraction, settings.front_max, rng)
    front, fe_hist = cy.train_front_end(x, y, fe_cfg, seed=seed)
    truths = {s.name: label_image(s)[0] for s in pool}
    front_masks = {}
    for s in tqdm(pool, desc="relevance -> pseudo masks", disable=not progress):
        h, w = s.rgb.shape[:2]
        corners = tc.tile_grid(h, w, tile, tile // 2)
        _, lab = tc.tile_labels(truths[s.name] > 0, corners, tile, settings.front_positive_fraction)
        front_masks[s.name] = cy.pseudo_masks(relevance_map(front, s.rgb, lab, tile, fe_cfg), fe_cfg)
    labels_used = int(len(y))
    if settings.back_end_start not in ("detector", "trunk"):
        raise ValueError(f"back_end_start must be 'detector' or 'trunk', not {settings.back_end_start!r}")
    from_detector = settings.back_end_start == "detector"
    mcfg = MODEL_PROFILES[profile].with_(weights=weights, detector_start=from_detector, classifier_start=from_detector)
    tcfg = TRAIN_PROFILES[profile].with_(iterations=settings.back_end_iterations, freeze_detection_at=None,
                                         finetune_lr=None, eval_every=0, class_balance=0.0,
                                         checkpoint_every=max(1, settings.back_end_iterations))
    current = dict(front_masks)
    rows, preds, model, seconds_train = [], {}, None, time.perf_counter() - t0
    for cycle in range(1, settings.cycles + 1):
        c0 = time.perf_counter()
        pseudo = [pseudo_sample(s, current[s.name]) for s in pool]
        pseudo_dice = cy.mean_dice([truths[s.name] for s in pool], [current[s.name] for s in pool])
        stream = TrainingStream(pseudo, np.ones(len(pseudo)), batch_size=tcfg.batch_size, crop=tcfg.crop,
                                classes=model_classes(mcfg.level), seed=seed + cycle, augment=tcfg.augment)
        model, _ = train_model(mcfg, tcfg, stream, Path(out_dir) / f"cycle{cycle}", seed=seed + cycle,
                               progress=progress, desc=f"Cyclic back end, cycle {cycle}",
                               data_fingerprint=samples_fingerprint(pseudo), say=say)
        seconds_train += time.perf_counter() - c0
        preds[cycle] = {s.name: from_detections(model.predict(s.rgb), s.rgb.shape[:2]) for s in test}
        for name, samples in truths_of_test.items():
            rows.append({"cycle": cycle, "truth": name, "pseudo_nuclei": int(sum(len(p) for p in pseudo)),
                         "pseudo_dice": pseudo_dice, **score_predictions(samples, preds[cycle])})
        if cycle < settings.cycles:
            f0 = time.perf_counter()
            current = {s.name: _merge_feedback(from_detections(model.predict(s.rgb), s.rgb.shape[:2],
                                                               settings.feedback_score).labels, front_masks[s.name])
                       for s in pool}
            seconds_train += time.perf_counter() - f0
    last = model

    def predict(rgb: np.ndarray) -> FovPrediction:
        return from_detections(last.predict(rgb), rgb.shape[:2])

    run = BaselineRun("Cyclic Learning", predict, labels_used=labels_used, seconds=seconds_train,
                      info={"front_end_accuracy": float(fe_hist["accuracy"].iloc[-1]), "tiles": len(y),
                            "positive_share": float(np.mean(y)), "fovs": len(pool)}, history=fe_hist)
    return run, pd.DataFrame(rows), preds


# ---------------------------------------------------------------------------------------------------------------
# the ladder
# ---------------------------------------------------------------------------------------------------------------
#: The systems of the ladder, cheapest label first: (system, seed, kind of label).
SYSTEMS: tuple[tuple[str, str, str], ...] = (
    ("heuristic bootstrap", "notebook 02", "none"),
    ("pretrained detector", "the models' start", "none on this cohort (a separate synthetic one, fully labelled)"),
    ("Cyclic Learning", "seed 004", "image-level"),
    ("tile classifier", "seed 002", "tile-level"),
    ("U-Net small", "seed 003", "pixel masks"),
    ("U-Net full", "seed 003", "pixel masks"),
    ("NuCLS", "notebook 05", "crowd boxes + clicked boundaries"),
)

_LADDER_METRICS = ("ap50", "dice", "aji", "pq", "count_deviation", "object_f1")


def ladder_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The supervision ladder: one row per system and truth set (systems cheapest label first), the metrics in %,
    mean over the folds run, and ``seconds``, the training's wall time (a timing column: left out when two runs are
    compared, :data:`nucls_utils.tables.TIMING_COLUMNS`). ``rows``: one row per system, fold and truth with
    :func:`score_predictions`' keys and ``system``, ``labels_used``, ``seconds``."""
    order = {s: i for i, (s, _, _) in enumerate(SYSTEMS)}
    meta = {s: (seed, kind) for s, seed, kind in SYSTEMS}
    g = rows.groupby(["system", "truth"], sort=False)
    out = g.agg(folds=("fold", "nunique"), fovs=("n_fovs", "sum"), labels_used=("labels_used", "mean"),
                seconds=("seconds", "mean"), **{m: (m, "mean") for m in _LADDER_METRICS}).reset_index()
    for m in _LADDER_METRICS:
        out[m] = (100 * out[m]).round(1)
    out["labels_used"] = out["labels_used"].round(0).astype("Int64")
    out["seconds"] = out["seconds"].round(0)
    out.insert(1, "seed", [meta.get(s, ("", ""))[0] for s in out["system"]])
    out.insert(2, "label", [meta.get(s, ("", ""))[1] for s in out["system"]])
    out["_o"] = [order.get(s, len(order)) for s in out["system"]]
    truth_order = {"corrected": 0, "generator": 1, "real sample": 2}
    out["_t"] = [truth_order.get(t, 3) for t in out["truth"]]
    out = out.sort_values(["_t", "_o"]).drop(columns=["_o", "_t"]).reset_index(drop=True)
    return out.rename(columns={"ap50": "AP@.5", "dice": "pixel Dice", "aji": "AJI", "pq": "PQ",
                               "count_deviation": "count deviation %", "object_f1": "object F1"})


def seed_paper_vs_run(tile_f1: float | None, count_deviation: dict[str, float]) -> pd.DataFrame:
    """The seeds' own reported numbers beside this run's (percent): seed 002's weighted tile F1 and seed 003's count
    deviation of each U-Net (``{'U-Net small': fraction, 'U-Net full': fraction}``)."""
    from .. import paper

    rows = []
    if tile_f1 is not None:
        rows.append(paper.row("seed002.tile_f1_weighted", "tile classifier: test tile F1, weighted (%)",
                              round(100 * tile_f1, 1), "NuCLS FOVs at nucleus-sized tiles vs the seed's 256 px tiles"))
    for name, key in (("U-Net small", "seed003.count_deviation_small"), ("U-Net full", "seed003.count_deviation_full")):
        if name in count_deviation:
            rows.append(paper.row(key, f"{name}: count deviation (%)", round(100 * count_deviation[name], 1),
                                  "breast-cancer FFPE FOVs vs the seed's CryoNuSeg cryosections"))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# every system on every fold
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LadderResult:
    """What :func:`run_ladder` returns."""

    rows: pd.DataFrame  # one row per system, fold and truth: labels_used, seconds and the scores (fractions)
    cycles: pd.DataFrame  # Cyclic Learning, one row per fold, cycle and truth
    tile_f1: pd.DataFrame  # seed 002's tile F1 on the test FOVs' tiles, per fold
    pseudo_rounds: pd.DataFrame  # seed 002's pseudo-labelling rounds, per fold
    runs: dict[str, BaselineRun]  # the first fold's trained systems (to apply elsewhere)
    notes: list[str] = field(default_factory=list)


def bootstrap_run() -> BaselineRun:
    """Notebook 02's heuristic bootstrap segmentation as a "system" that learns from no label."""
    from ..suggestions.heuristic import segment_nuclei

    return BaselineRun("heuristic bootstrap", lambda rgb: from_instances(segment_nuclei(rgb)[0]), labels_used=0,
                       seconds=0.0)


def pretrained_detector_run(profile: str, weights: str | None) -> BaselineRun | None:
    """The detector every model here starts from (with a synthetic-pretrained trunk: the detector pretrained with it
    on a separate, fully labelled synthetic cohort), applied as it is: what the start alone scores, before any label
    of the study's cohort. None when ``weights`` is not a synthetic-pretrained start (no pretrained detector)."""
    from ..model.architecture import build_model
    from ..model.pretrain import TOKEN_PREFIX
    from ..model.train import MODEL_PROFILES

    if not (isinstance(weights, str) and weights.startswith(TOKEN_PREFIX)):
        return None
    model = build_model(MODEL_PROFILES[profile].with_(weights=weights, detector_start=True, classifier_start=True))
    model.eval()
    return BaselineRun("pretrained detector", lambda rgb: from_detections(model.predict(rgb), rgb.shape[:2]),
                       labels_used=0, seconds=0.0)


def _stored_only(rgb: np.ndarray) -> FovPrediction:
    raise RuntimeError("this fold's NuCLS row is scored from notebook 05's stored predictions, not predicted again")


def _experiment_seconds(model_dir: Path) -> float:
    import json

    f = Path(model_dir) / "experiment.json"
    return float(json.loads(f.read_text()).get("seconds", np.nan)) if f.is_file() else np.nan


def nucls_run(model_dir: str | Path, labels_used: int) -> BaselineRun:
    """A trained NuCLS model of notebook 05 (its folder under ``05_training/models``) as a system."""
    from ..model.train import load_trained

    model = load_trained(model_dir)
    return BaselineRun("NuCLS", lambda rgb: from_detections(model.predict(rgb), rgb.shape[:2]),
                       labels_used=labels_used, seconds=_experiment_seconds(Path(model_dir)))


def run_ladder(samples: Sequence, generator: Sequence | None, assignment: pd.DataFrame, settings: BaselineSettings,
               *, profile: str, weights: str | None, nucls_dir: str | Path, out_dir: str | Path, seed: int = 0,
               progress: bool = True) -> LadderResult:
    """Train every baseline on each fold of ``settings.folds`` (the corrected single-rater ``samples``; the fold's
    held-out hospitals are its test FOVs, as in notebook 05) and score all systems, notebook 05's NuCLS model
    (``nucls_dir/config3_fold<k>``, its stored test predictions) included, against the corrected truth and, given
    ``generator``, the generator's exact nuclei."""
    from ..model.experiments import fold_split, load_predictions
    from ..progress import tqdm

    gen_by_name = {s.name: s for s in generator} if generator else {}
    rows, cycles, tile_rows, rounds, notes = [], [], [], [], []
    runs: dict[str, BaselineRun] = {}
    for fold in settings.folds:
        tr, te = fold_split(assignment, fold, [s.slide for s in samples])
        train, test = [samples[i] for i in tr], [samples[i] for i in te]
        tests = {"corrected": test}
        if gen_by_name:
            tests["generator"] = [gen_by_name[s.name] for s in test if s.name in gen_by_name]
        fold_runs = [bootstrap_run()]
        start = pretrained_detector_run(profile, weights)
        if start is not None:
            fold_runs.append(start)
        elif fold == settings.folds[0]:
            notes.append("no synthetic-pretrained detector in this profile's start: no 'pretrained detector' row")
        cyc, cyc_rows, cyc_preds = run_cyclic(train, test, tests, settings, profile=profile, weights=weights,
                                      out_dir=Path(out_dir) / f"cyclic_fold{fold}", seed=seed, progress=progress,
                                      say=None)
        cycles.append(cyc_rows.assign(fold=fold))
        fold_runs.append(cyc)
        tile = run_tile_classifier(train, settings, seed=seed)
        tc.save_tile_classifier(tile.info["model"], Path(out_dir) / f"tile_classifier_fold{fold}.pt",
                                {"fold": fold, "profile": profile, "seed": seed, "config": settings.tile.to_dict()})
        rounds.append(tile.history.assign(fold=fold))
        tile_rows.append({"fold": fold, **tile_f1_on(tile.info["model"], test, settings.tile.positive_fraction)})
        fold_runs.append(tile)
        for name, cfg in (("U-Net small", settings.unet_small), ("U-Net full", settings.unet_full)):
            fold_runs.append(run_unet(train, cfg, name, seed=seed))
        preds_by_system: dict[str, dict[str, FovPrediction]] = {}
        for run in fold_runs:
            if run.system == "Cyclic Learning":
                continue  # predicted per cycle inside run_cyclic; the last cycle's predictions are below
            preds_by_system[run.system] = {s.name: run.predict(s.rgb)
                                           for s in tqdm(test, desc=f"{run.system}, fold {fold}", disable=not progress)}
        preds_by_system["Cyclic Learning"] = cyc_preds[settings.cycles]
        model_dir = Path(nucls_dir) / f"config3_fold{fold}"
        stored = model_dir / "predictions_test.npz"
        if stored.is_file():
            dets = load_predictions(stored)
            preds_by_system["NuCLS"] = {s.name: from_detections(dets[s.name], s.rgb.shape[:2]) for s in test}
            boxes = int(sum(len(s) for s in train))
            if fold == settings.folds[0]:
                runs["NuCLS"] = nucls_run(model_dir, boxes)
            fold_runs.append(BaselineRun("NuCLS", _stored_only, labels_used=boxes,
                                         seconds=_experiment_seconds(model_dir)))
        else:
            notes.append(f"fold {fold}: no NuCLS predictions at {stored.parent.name}/{stored.name} (run notebook 05 "
                         "first): the NuCLS row is missing")
        for run in fold_runs:
            for truth, samples_t in tests.items():
                rows.append({"system": run.system, "fold": fold, "truth": truth, "labels_used": run.labels_used,
                             "seconds": run.seconds, **score_predictions(samples_t, preds_by_system[run.system])})
        if fold == settings.folds[0]:
            runs.update({r.system: r for r in fold_runs if r.system != "NuCLS"})
            runs = {name: runs[name] for name, _, _ in SYSTEMS if name in runs}  # the ladder's order
    return LadderResult(pd.DataFrame(rows), pd.concat(cycles, ignore_index=True), pd.DataFrame(tile_rows),
                        pd.concat(rounds, ignore_index=True), runs, notes)


def score_transfer(runs: dict[str, BaselineRun], samples: Sequence, truth: str = "real sample",
                   progress: bool = True, limit: int | None = None) -> pd.DataFrame:
    """Each trained system applied to other FOVs (e.g. the real sample; the first ``limit`` of them) and scored
    against their annotations: one row per system with :func:`score_predictions`' keys, ``labels_used`` and
    ``seconds`` of its training."""
    from ..progress import tqdm

    samples = list(samples)[:limit]
    rows = []
    for name, run in runs.items():
        preds = {s.name: run.predict(s.rgb) for s in tqdm(samples, desc=name, disable=not progress)}
        rows.append({"system": name, "fold": 0, "truth": truth, "labels_used": run.labels_used,
                     "seconds": run.seconds, **score_predictions(samples, preds)})
    return pd.DataFrame(rows)
