"""The synthetic cohort: hospitals -> slides -> ROIs -> FOVs, written in the official single-rater layout.

Everything is drawn from one ``numpy.random.SeedSequence(seed)``, spawned per hospital, slide, ROI and FOV, so the
same (generator version, profile, seed) gives byte-identical files. Output folder::

    rgb/ csv/ mask/ ALL_FOV_LOCATIONS.csv   the official layout; annotations are boxes or traced outlines drawn around the true nuclei
    regions/<roi>.png, regions/region_codes.csv   tissue-region maps of the ROIs (codes in layout.REGION_CODES)
    truth/nuclei.csv   per nucleus: FOV, index in the CSV, class, region, centre, radius (ground truth extras)
    truth/fovs.csv     per FOV: hospital, slide, ROI and position in it, ROI archetype, focus, stain style
    manifest.json      generator version, seed, profile, spec, counts and the sha256 of every other file (no
                       timestamps: reproducible bytes); a cohort is reused only when every hash still matches
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage as ndi

from .. import taxonomy as tx
from ..io.atomic import atomic_dir, terminate_raises
from ..io.dataset import FovRecord, Nucleus, validate_record, write_fov_files, write_fov_locations
from ..io.manifest import read_manifest_json, verify_manifest, write_manifest
from ..io.naming import FovName, format_fov_name
from ..profiles import stage_settings
from ..progress import tqdm
from .calibration import FOV_RECT_SIDE_PX, HOSPITAL_SLIDE_COUNTS, POLYLINE_SHARE
from .layout import REGION_CODES, REGION_NAMES, make_roi
from .refiner import refine_image, refiner_info
from .render import draw_stain_style, perturb_stain_style, render_crop

__all__ = ["GENERATOR_VERSION", "CohortSpec", "PROFILE_SPECS", "generate_cohort", "ensure_cohort",
           "cohort_is_current", "cohort_problem", "read_manifest", "fov_region_map"]

#: Bump whenever the generator's output changes; cached cohorts with another version are regenerated.
GENERATOR_VERSION = "2.5.0"
#: Slide coordinates at base magnification are at 0.25 microns per pixel (40x), the RGB at 0.2: factor 0.8.
BASE_PER_RGB_PX = 0.8


@dataclass(frozen=True)
class CohortSpec:
    """Size of a synthetic cohort."""

    profile: str
    hospital_slides: tuple[int, ...]  # slides of each hospital
    rois_per_slide: int
    fovs_per_roi: int
    roi_size_px: int
    out_of_focus_rate: float = 0.04

    @property
    def n_fovs(self) -> int:
        return sum(self.hospital_slides) * self.rois_per_slide * self.fovs_per_roi


#: The cohort of each compute profile (settings in :data:`nucls_utils.profiles.STAGES`).
PROFILE_SPECS: dict[str, CohortSpec] = {
    p: CohortSpec(p, **{**kw, "hospital_slides": kw["hospital_slides"] or HOSPITAL_SLIDE_COUNTS})
    for p, kw in stage_settings("cohort").items()
}

_HOSPITAL_CODES = [f"Y{c}" for c in "0123456789ABCDEFGHJKLMNPQRSTUVWXZ"]
#: What a cohort is for. ``study``: the study's cohort (annotations are boxes or traced outlines around the true
#: nuclei, hospitals Y0, Y1, ...). ``pretrain``: the cohort a shared trunk is pretrained on
#: (:mod:`nucls_utils.model.pretrain`): hospitals Q0, Q1, ... and its own random streams, so it shares no hospital,
#: slide or FOV with any study cohort, and its annotations are the exact true outlines (dense targets for free).
NAMESPACES: dict[str, dict] = {"study": {"hospital_prefix": "Y", "stream": (), "exact_outlines": False},
                               "pretrain": {"hospital_prefix": "Q", "stream": (7,), "exact_outlines": True}}


_MAX_MARGIN = 45
_MAX_CROP = 340 + 2 * _MAX_MARGIN


def _fov_boxes(rng: np.random.Generator, roi: int, n: int) -> list[tuple[tuple[int, int, int, int], tuple]]:
    """Non-overlapping FOV crops in an ROI: (crop x0, y0, x1, y1) and the intended FOV rect inside the crop.

    The ROI is cut into a g x g grid (g = ceil(sqrt(n))); ``n`` distinct cells are drawn and each holds one FOV at
    a random position, with a random rectangle side (about 317 px) and random margins (0-45 px a side).
    """
    g = int(np.ceil(np.sqrt(n)))
    cell = roi // g
    if cell < _MAX_CROP:
        raise ValueError(f"a {roi} px ROI cannot hold {n} FOVs of up to {_MAX_CROP} px in a {g} x {g} grid")
    out = []
    for c in sorted(rng.choice(g * g, size=n, replace=False)):
        gy, gx = divmod(int(c), g)
        side_w = int(np.clip(round(rng.normal(FOV_RECT_SIDE_PX["median"], 2.5)), 300, 340))
        side_h = int(np.clip(round(rng.normal(FOV_RECT_SIDE_PX["median"], 2.5)), 300, 340))
        ml, mt, mr, mb = (int(v) for v in rng.integers(0, _MAX_MARGIN + 1, 4))
        w, h = side_w + ml + mr, side_h + mt + mb
        x0 = gx * cell + int(rng.integers(0, cell - w + 1))
        y0 = gy * cell + int(rng.integers(0, cell - h + 1))
        out.append(((x0, y0, x0 + w, y0 + h), (ml, mt, ml + side_w, mt + side_h)))
    return out


def _outline_in_crop(nuc, crop: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = crop
    xs = np.clip(np.rint(nuc.xs - x0), 0, x1 - x0).astype(int)
    ys = np.clip(np.rint(nuc.ys - y0), 0, y1 - y0).astype(int)
    keep = np.ones(len(xs), bool)
    keep[1:] = (np.diff(xs) != 0) | (np.diff(ys) != 0)
    xs, ys = xs[keep], ys[keep]
    return np.append(xs, xs[0]), np.append(ys, ys[0])  # closed ring, as in the release


def generate_cohort(out_dir: str | os.PathLike[str], profile: str = "cpu", seed: int = 0, *,
                    overwrite: bool = False, progress: bool = True,
                    refiner_weights: str | os.PathLike[str] | None = None, namespace: str = "study") -> Path:
    """Generate the synthetic cohort of ``profile`` into ``out_dir`` (written atomically).

    ``namespace``: ``study`` (the default) or ``pretrain`` (see :data:`NAMESPACES`).

    ``refiner_weights``: a weights file of the experimental learned refiner (:mod:`.refiner`, fitted on this
    generator version), applied to every rendered FOV and recorded in the manifest; the study's cohort has none.
    Returns the folder. See the module docstring for its contents.
    """
    if profile not in PROFILE_SPECS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_SPECS)}")
    if namespace not in NAMESPACES:
        raise ValueError(f"unknown cohort namespace {namespace!r}; choose one of {', '.join(NAMESPACES)}")
    ns = NAMESPACES[namespace]
    spec = PROFILE_SPECS[profile]
    refiner = None if refiner_weights is None else _refiner_record(refiner_weights)
    root_ss = np.random.SeedSequence([seed, *ns["stream"]] if ns["stream"] else seed)
    fov_rows, nuc_rows, records = [], [], []
    n_slides = sum(spec.hospital_slides)
    bar = tqdm(total=n_slides * spec.rois_per_slide, desc=f"synthetic cohort ({profile})", disable=not progress)
    with terminate_raises(), atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for sub in ("rgb", "csv", "mask", "regions", "truth"):
            (tmp / sub).mkdir()
        for h_idx, (h_ss, n_sl) in enumerate(zip(root_ss.spawn(len(spec.hospital_slides)), spec.hospital_slides,
                                                 strict=True)):
            hosp = ns["hospital_prefix"] + _HOSPITAL_CODES[h_idx][1:]
            h_rng = np.random.default_rng(h_ss)
            h_style = draw_stain_style(h_rng)
            for s_idx, s_ss in enumerate(h_ss.spawn(n_sl)):
                s_rng = np.random.default_rng(s_ss)
                slide = f"TCGA-{hosp}-A{s_idx:03d}-DX1"
                s_style = perturb_stain_style(h_style, s_rng)
                item_id = "".join(f"{v:02x}" for v in s_rng.integers(0, 256, 12))
                for r_idx, r_ss in enumerate(s_ss.spawn(spec.rois_per_slide)):
                    r_rng = np.random.default_rng(r_ss)
                    layout = make_roi(r_rng, spec.roi_size_px)
                    roi_name = f"{slide}_roi-{r_idx}"
                    Image.fromarray(layout.regions).save(tmp / "regions" / f"{roi_name}.png")
                    roi_left, roi_top = (int(v) for v in r_rng.integers(5000, 100000, 2))
                    boxes = _fov_boxes(r_rng, spec.roi_size_px, spec.fovs_per_roi)
                    for f_ss, (crop, rect) in zip(r_ss.spawn(len(boxes)), boxes, strict=True):
                        f_rng = np.random.default_rng(f_ss)
                        rec, image, fov_info, nuc_info = _make_fov(layout, crop, rect, spec, s_style, f_rng,
                                                                   slide, item_id, roi_left, roi_top,
                                                                   exact=ns["exact_outlines"])
                        if refiner is not None:
                            image = refine_image(image, refiner_weights)
                        validate_record(rec)
                        write_fov_files(tmp, rec, image)
                        records.append(rec)
                        fov_rows.append({"fovname": rec.name, "hospital": hosp, "slide_name": slide, "roi": roi_name,
                                         "roi_x0": crop[0], "roi_y0": crop[1], "roi_x1": crop[2],
                                         "roi_y1": crop[3],
                                         "archetype": layout.composition["archetype"], **fov_info,
                                         **{f"stain_{k}": json.dumps(v) if isinstance(v, list) else v
                                            for k, v in s_style.as_dict().items()}})
                        nuc_rows += nuc_info
                    bar.update(1)
        bar.close()
        write_fov_locations(tmp, records)
        pd.DataFrame(sorted(REGION_CODES.items(), key=lambda kv: kv[1]), columns=["region", "code"]).to_csv(
            tmp / "regions" / "region_codes.csv", index=False)
        fovs = pd.DataFrame(fov_rows)
        nuclei = pd.DataFrame(nuc_rows)
        fovs.to_csv(tmp / "truth" / "fovs.csv", index=False)
        nuclei.to_csv(tmp / "truth" / "nuclei.csv", index=False)
        counts = nuclei["raw_class"].value_counts().reindex(list(tx.RAW_CLASSES), fill_value=0)
        manifest = {
            "generator": "nucls_utils.phantom", "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "namespace": namespace, "profile": profile, "spec": asdict(spec), "refiner": refiner,
            "counts": {"hospitals": len(spec.hospital_slides), "slides": n_slides,
                       "rois": n_slides * spec.rois_per_slide, "fovs": len(records), "nuclei": int(len(nuclei)),
                       "nuclei_by_raw_class": {k: int(v) for k, v in counts.items()},
                       "out_of_focus_fovs": int(fovs["out_of_focus"].sum())},
        }
        write_manifest(tmp, manifest)
    return Path(out_dir)


def _make_fov(layout, crop, rect, spec: CohortSpec, style, rng: np.random.Generator, slide: str, item_id: str,
              roi_left: int, roi_top: int, exact: bool = False):
    x0, y0, x1, y1 = crop
    w, h = x1 - x0, y1 - y0
    rl, rt, rr, rb = rect
    outlines, annotated = {}, []
    for k, nuc in enumerate(layout.nuclei):
        if nuc.xs.max() < x0 or nuc.xs.min() > x1 or nuc.ys.max() < y0 or nuc.ys.min() > y1:
            continue
        outlines[k] = _outline_in_crop(nuc, crop)
        cx, cy, pad = nuc.cx - x0, nuc.cy - y0, 0.5 * nuc.radius
        if rl - pad <= cx <= rr + pad and rt - pad <= cy <= rb + pad and len(outlines[k][0]) >= 4:
            annotated.append(k)
    out_of_focus = bool(rng.random() < spec.out_of_focus_rate)
    blur = float(rng.uniform(2.0, 3.0)) if out_of_focus else float(rng.uniform(0.6, 1.1))
    quality = int(rng.integers(60, 86))
    image = render_crop(layout, crop, outlines, style, rng, blur_sigma=blur, noise_sd=float(rng.uniform(1.0, 2.5)),
                        jpeg_quality=quality)
    name = format_fov_name(FovName(
        slide, item_id,
        left=roi_left + int(round(x0 * BASE_PER_RGB_PX)), top=roi_top + int(round(y0 * BASE_PER_RGB_PX)),
        bottom=roi_top + int(round(y1 * BASE_PER_RGB_PX)), right=roi_left + int(round(x1 * BASE_PER_RGB_PX))))
    nuclei, info = [], []
    for i, k in enumerate(annotated):
        nuc = layout.nuclei[k]
        true = Nucleus.from_polygon(nuc.raw_class, *(v.tolist() for v in outlines[k]))
        ann = _annotate(nuc, crop, np.random.default_rng([nuc.seed, 1]))
        nuclei.append(ann if ann is not None and not exact else true)
        info.append({"fovname": name, "nucleus_index": i, "raw_class": nuc.raw_class,
                     "region": REGION_NAMES[nuc.region], "center_x": round(nuc.cx - x0, 2),
                     "center_y": round(nuc.cy - y0, 2), "radius_px": round(nuc.radius, 2),
                     "area_px": nuclei[-1].area, "true_area_px": true.area, "type": nuclei[-1].type})
    rec = FovRecord(name, (h, w), tuple(nuclei), (rl, rt, rr, rb))
    return rec, image, {"out_of_focus": out_of_focus, "blur_sigma": round(blur, 3), "jpeg_quality": quality}, info


def _annotate(nuc, crop: tuple[int, int, int, int], rng: np.random.Generator):
    """What an annotator records for a true nucleus: a box drawn around it (two thirds of the core set) or a traced
    boundary (:data:`~.calibration.POLYLINE_SHARE`) that is not the true outline: a little larger or smaller, with
    clicked-vertex jitter and fewer vertices. ``None`` when the annotation collapses (the true outline is used)."""
    x0, y0, x1, y1 = crop
    w, h = x1 - x0, y1 - y0
    if rng.random() >= POLYLINE_SHARE:
        pad = np.rint(rng.normal(-1.0, 1.5, 4)).clip(-3, 6)
        bx0 = int(np.clip(np.floor(nuc.xs.min() - x0 - pad[0]), 0, w))
        by0 = int(np.clip(np.floor(nuc.ys.min() - y0 - pad[1]), 0, h))
        bx1 = int(np.clip(np.ceil(nuc.xs.max() - x0 + pad[2]), 0, w))
        by1 = int(np.clip(np.ceil(nuc.ys.max() - y0 + pad[3]), 0, h))
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            return None
        return Nucleus.from_box(nuc.raw_class, bx0, by0, bx1, by1)
    dx, dy = nuc.xs - nuc.cx, nuc.ys - nuc.cy
    scale = 1.0 + rng.normal(0.03, 0.06)
    n = len(dx)
    jitter = ndi.gaussian_filter1d(rng.normal(0, 1.0, n), 1.0, mode="wrap")
    r = np.hypot(dx, dy)
    f = scale + jitter / np.maximum(r, 1.0)
    keep = np.arange(int(rng.integers(0, 2)), n, 2) if n >= 16 else np.arange(n)
    xs = nuc.cx - x0 + (dx * f)[keep]
    ys = nuc.cy - y0 + (dy * f)[keep]
    xi = np.clip(np.rint(xs), 0, w).astype(int)
    yi = np.clip(np.rint(ys), 0, h).astype(int)
    ok = np.ones(len(xi), bool)
    ok[1:] = (np.diff(xi) != 0) | (np.diff(yi) != 0)
    xi, yi = xi[ok], yi[ok]
    if len(np.unique(np.stack([xi, yi], 1), axis=0)) < 3:
        return None
    return Nucleus.from_polygon(nuc.raw_class, np.append(xi, xi[0]).tolist(), np.append(yi, yi[0]).tolist())


def read_manifest(root: str | os.PathLike[str]) -> dict | None:
    """The cohort's manifest, or ``None`` when there is none (or it is unreadable)."""
    return read_manifest_json(Path(root) / "manifest.json")


def cohort_problem(root: str | os.PathLike[str], profile: str, seed: int, namespace: str = "study") -> str | None:
    """Why ``root`` is not a complete, unmodified cohort of this generator version, profile and seed (``None``
    when it is): a missing or foreign manifest, another version/profile/seed, a cohort refined by the experimental
    refiner (the study's cohort is not), or any file missing, added or changed since it was written (sha256 per
    file, see :mod:`nucls_utils.io.manifest`)."""
    return verify_manifest(root, expect={"generator": "nucls_utils.phantom", "generator_version": GENERATOR_VERSION,
                                         "profile": profile, "seed": int(seed), "refiner": None,
                                         "namespace": namespace})


def _refiner_record(weights: str | os.PathLike[str]) -> dict:
    """What a cohort records of the refiner it is made with (:func:`.refiner.refiner_info`); weights fitted on
    another generator version are refused."""
    info = refiner_info(weights)
    if info["generator_version"] != GENERATOR_VERSION:
        raise RuntimeError(f"the refiner weights {weights} were fitted on generator {info['generator_version']}, "
                           f"this is {GENERATOR_VERSION}: refit them with `python -m nucls_utils.phantom.refiner fit "
                           "--real DIR --out FILE`")
    return info


def cohort_is_current(root: str | os.PathLike[str], profile: str, seed: int, namespace: str = "study") -> bool:
    """Whether ``root`` holds a complete, unmodified cohort of this generator version, profile, seed and
    namespace."""
    return cohort_problem(root, profile, seed, namespace) is None


def ensure_cohort(root: str | os.PathLike[str], profile: str = "cpu", seed: int = 0, *,
                  progress: bool = True, say=print, namespace: str = "study") -> tuple[Path, bool]:
    """Generate the cohort into ``root`` unless an up-to-date one is there; return ``(root, generated)``.

    When a cohort is there but cannot be reused, ``say`` is called with the reason before it is regenerated.
    """
    problem = cohort_problem(root, profile, seed, namespace)
    if problem is None:
        return Path(root), False
    if Path(root).exists() and say is not None:
        say(f"synthetic cohort at {root} cannot be reused ({problem}): regenerating it")
    generate_cohort(root, profile, seed, overwrite=True, progress=progress, namespace=namespace)
    return Path(root), True


def fov_region_map(root: str | os.PathLike[str], fovname: str) -> np.ndarray:
    """The tissue-region map of one synthetic FOV (its crop of the ROI's map), ``(H, W) uint8`` region codes."""
    root = Path(root)
    fovs = pd.read_csv(root / "truth" / "fovs.csv").set_index("fovname")
    if fovname not in fovs.index:
        raise KeyError(f"{fovname} is not a FOV of the synthetic cohort in {root}")
    row = fovs.loc[fovname]
    with Image.open(root / "regions" / f"{row['roi']}.png") as im:
        regions = np.asarray(im)
    return regions[int(row["roi_y0"]):int(row["roi_y1"]), int(row["roi_x0"]):int(row["roi_x1"])]
