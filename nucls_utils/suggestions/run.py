"""Suggestions for a whole dataset, with progress bars (used by notebook 02), and the refinement model as a cached
artefact.

The refinement model is the slow part of notebook 02 (minutes of training on a CPU). :func:`refine_dataset` keeps
what it produced in a folder (``cache_dir``)::

    model.pt         the trained weights (``state_dict``)
    history.json     the loss history (column -> values)
    refined.json     per FOV: the refined suggestions and their confidences
    manifest.json    key, config, seed, classes, versions and the sha256 of every file above

The key is the sha256 of everything the result depends on: the :class:`RefinerConfig`, the seed, the training data
(FOV names, the pixels of every image and the bootstrap suggestions, see :func:`training_fingerprint`), the torch and
torchvision versions and :data:`REFINER_CACHE_VERSION`. The folder is reused only when
:func:`nucls_utils.io.manifest.verify_manifest` finds that key and every file unchanged; otherwise the model is
retrained, saying why, and the folder is replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.atomic import atomic_dir
from ..io.dataset import FovRecord, Nucleus
from ..io.manifest import verify_manifest, write_manifest
from ..progress import tqdm
from .heuristic import HeuristicParams, bootstrap_suggestions
from .refine import CLASS_AGNOSTIC, RefinerConfig, build_refiner, refine_fov, refiner_classes, train_refiner

__all__ = ["REFINER_CACHE_VERSION", "RefinedDataset", "bootstrap_dataset", "refine_dataset", "refiner_key",
           "training_fingerprint", "nucleus_to_json", "nucleus_from_json"]

#: Bump when training or inference gives other output for the same inputs: cached refiners are then retrained.
REFINER_CACHE_VERSION = "1"
_ARTEFACT = "nucls_utils.suggestions.refiner"


def bootstrap_dataset(records: Sequence[FovRecord], synthetic_root: str | os.PathLike[str] | None = None,
                      params: HeuristicParams | None = None, progress: bool = True) -> list[list[Nucleus]]:
    """Bootstrapped suggestions of every FOV. With ``synthetic_root`` the phantom's tissue-region maps drive the
    per-region segmentation and classes; without it (real data has no region maps here) each FOV is one region and
    every suggestion is ``unlabeled`` (the suggestions carry no class)."""
    from ..phantom import REGION_NAMES, fov_region_map

    params = params or HeuristicParams()
    out = []
    for r in tqdm(records, desc="bootstrap suggestions", disable=not progress):
        regions = fov_region_map(synthetic_root, r.name) if synthetic_root is not None else None
        out.append(bootstrap_suggestions(r.read_rgb(), regions, REGION_NAMES if regions is not None else None,
                                         params))
    return out


# ------------------------------------------------------------------------------------------------------------
# Keys and serialisation
# ------------------------------------------------------------------------------------------------------------
def nucleus_to_json(n: Nucleus) -> dict:
    """A nucleus as plain JSON data (every field)."""
    d = asdict(n)
    d["coords_x"], d["coords_y"] = list(n.coords_x), list(n.coords_y)
    return d


def nucleus_from_json(d: dict) -> Nucleus:
    """Inverse of :func:`nucleus_to_json`."""
    return Nucleus(**{**d, "coords_x": tuple(d["coords_x"]), "coords_y": tuple(d["coords_y"])})


def training_fingerprint(names: Sequence[str], images: Sequence[np.ndarray],
                         bootstrap: Sequence[Sequence[Nucleus]]) -> str:
    """sha256 over the FOV names, the pixels (shape, dtype and bytes) of every image and its bootstrap suggestions,
    in order."""
    h = hashlib.sha256()
    for name, im, sug in zip(names, images, bootstrap, strict=True):
        im = np.ascontiguousarray(im)
        h.update(json.dumps([name, list(im.shape), str(im.dtype)]).encode())
        h.update(im.tobytes())
        h.update(json.dumps([nucleus_to_json(n) for n in sug], separators=(",", ":")).encode())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from ..model.architecture import library_versions

    return library_versions()


def refiner_key(config: RefinerConfig, seed: int, fingerprint: str) -> str:
    """The cache key of a refinement model: sha256 of its config, seed, training-data fingerprint, the torch and
    torchvision versions and :data:`REFINER_CACHE_VERSION`."""
    payload = {"version": REFINER_CACHE_VERSION, "config": asdict(config), "seed": int(seed), "data": fingerprint,
               **_versions()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class RefinedDataset:
    """What :func:`refine_dataset` returns. Unpacks as ``refined, confidences, history, model``."""

    refined: list[list[Nucleus]]
    confidences: list[list[float]]
    history: pd.DataFrame
    model: object = field(repr=False)
    classes: tuple[str, ...]
    key: str
    reused: bool = False  # the cached model and suggestions were reused (no training)
    reason: str | None = None  # why the cache could not be reused (None when reused or without a cache)

    def __iter__(self) -> Iterator:
        return iter((self.refined, self.confidences, self.history, self.model))

    @property
    def class_agnostic(self) -> bool:
        """Whether the model detects nuclei without classes (its suggestions are all ``unlabeled``)."""
        return self.classes == CLASS_AGNOSTIC


def _load(cache: Path, names: Sequence[str], config: RefinerConfig, classes: tuple[str, ...]):
    import torch

    data = json.loads((cache / "refined.json").read_text(encoding="utf-8"))
    if [f["fovname"] for f in data["fovs"]] != list(names):
        raise ValueError("refined.json lists other FOVs")
    refined = [[nucleus_from_json(d) for d in f["nuclei"]] for f in data["fovs"]]
    confidences = [[float(c) for c in f["confidences"]] for f in data["fovs"]]
    history = pd.DataFrame(json.loads((cache / "history.json").read_text(encoding="utf-8")))
    model = build_refiner(num_classes=len(classes) + 1, channels=config.channels)
    model.load_state_dict(torch.load(cache / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return refined, confidences, history, model


def _save(cache: Path, names, refined, confidences, history: pd.DataFrame, model, meta: dict) -> None:
    import torch

    with atomic_dir(cache, overwrite=True) as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        # JSON keeps every float exactly (shortest repr round-trips), so a reused history equals the trained one
        cols = {c: history[c].tolist() for c in history.columns}
        (tmp / "history.json").write_text(json.dumps(cols) + "\n", encoding="utf-8")
        fovs = [{"fovname": n, "nuclei": [nucleus_to_json(x) for x in r], "confidences": [float(c) for c in cs]}
                for n, r, cs in zip(names, refined, confidences, strict=True)]
        (tmp / "refined.json").write_text(json.dumps({"fovs": fovs}) + "\n", encoding="utf-8")
        write_manifest(tmp, meta)


def refine_dataset(records: Sequence[FovRecord], bootstrap: Sequence[Sequence[Nucleus]], config: RefinerConfig,
                   seed: int = 0, progress: bool = True, cache_dir: str | os.PathLike[str] | None = None,
                   say: Callable[[str], object] | None = print) -> RefinedDataset:
    """Train the refinement model on the bootstrap of ``records`` and apply it to every FOV.

    Parameters
    ----------
    records : sequence of FovRecord
        The FOVs (their RGB files are read).
    bootstrap : sequence of sequence of Nucleus
        The bootstrap suggestions of each FOV (training targets). When none has a class the model can learn (all
        ``unlabeled``: no tissue-region maps), the model is trained class-agnostic (see
        :func:`~nucls_utils.suggestions.refine.refiner_classes`).
    config : RefinerConfig
    seed : int
        Seeds the weight initialisation, the crops and torchvision's sampling: same seed, same model.
    cache_dir : path-like, optional
        Folder of the cached artefact (see the module docstring): reused when its manifest has this run's key and
        no file changed, else (re)written after training.
    say : callable, optional
        Receives one line about the cache (reused, or why not).

    Returns
    -------
    RefinedDataset
        Unpacks as ``(refined, confidences, history, model)``; also says which classes the model learnt and whether
        the cache was reused.
    """
    say = say or (lambda _msg: None)
    names = [r.name for r in records]
    images = [r.read_rgb() for r in records]
    classes = refiner_classes(bootstrap)
    key = refiner_key(config, seed, training_fingerprint(names, images, bootstrap))
    reason = None
    if cache_dir is not None:
        cache = Path(cache_dir)
        reason = verify_manifest(cache, expect={"artefact": _ARTEFACT, "key": key}) if cache.exists() else \
            f"no cached refiner at {cache}"
        if reason is None:
            try:
                refined, confidences, history, model = _load(cache, names, config, classes)
            except Exception as e:  # noqa: BLE001 - an unreadable artefact is retrained, with the reason said
                reason = f"cached refiner at {cache} could not be read ({type(e).__name__}: {e})"
            else:
                say(f"refiner cache: reusing {cache} (key {key[:12]}, nothing changed)")
                return RefinedDataset(refined, confidences, history, model, classes, key, reused=True)
        say(f"refiner cache: {reason}: {'retraining' if cache.exists() else 'training'}")
    model = build_refiner(num_classes=len(classes) + 1, channels=config.channels, seed=seed, weights=config.weights)
    history = train_refiner(model, images, bootstrap, config, seed=seed, progress=progress, classes=classes)
    refined, confidences = [], []
    for im in tqdm(images, desc="refined suggestions", disable=not progress):
        n, c = refine_fov(model, im, config.score_threshold, config.nms_iou, classes=classes)
        refined.append(n)
        confidences.append(c)
    if cache_dir is not None:
        meta = {"artefact": _ARTEFACT, "key": key, "version": REFINER_CACHE_VERSION, "seed": int(seed),
                "config": asdict(config), "classes": list(classes), "fovs": len(records), **_versions()}
        _save(Path(cache_dir), names, refined, confidences, history, model, meta)
    return RefinedDataset(refined, confidences, history, model, classes, key, reason=reason)
