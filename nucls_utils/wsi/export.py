"""What a whole-slide prediction writes, streamed tile by tile from the per-tile files.

In the output folder (coordinates in level-0 pixels of the slide, as viewers expect):

``nuclei.parquet``
    One row per nucleus: ``nucleus_id``, centroid ``x``, ``y`` (of the outline), box ``xmin .. ymax``, outline
    ``polygon_x``, ``polygon_y`` (closed rings), ``area_um2``, ``class`` (main class), ``super_class``,
    ``objectness``, ``prob_<class>`` per class, and the ``tile_row``, ``tile_col`` that predicted it.
``nuclei.geojson``
    A GeoJSON FeatureCollection of detection polygons, ``classification: {name, color}`` and ``measurements``, as
    QuPath (0.4 and later) imports them (File > Import objects).
``annotations_dsa.json``
    A HistomicsUI / Digital Slide Archive annotation document: closed ``polyline`` elements grouped by class.
``density_grid.npz``, ``heatmap.png``
    Nuclei per mm^2 of tissue of each super-class on a grid of ``grid_um`` cells, drawn over the thumbnail.
``summary.json``
    Nuclei per class and super-class, the tissue and stromal areas and the stromal TIL density (:data:`STROMA_RULE`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import taxonomy as tx
from ..io.atomic import atomic_path

__all__ = ["STROMA_RULE", "SUPER_SHOWN", "write_outputs", "write_summary", "format_summary", "read_geojson",
           "geojson_problems", "hex_rgb", "stromal_tils", "count_grid", "tissue_grid", "grid_shape", "draw_heatmap"]

#: How the summary finds stroma and counts stromal TILs (printed with the density).
STROMA_RULE = ("stroma = grid cells ({grid:g} um a side) that are at least half tissue and whose detected nuclei are "
               "not mostly tumour (tumour nuclei <= 50 % of the cell's nuclei; a tissue cell without nuclei counts "
               "as stroma); stromal area = tissue area of those cells; sTILs = nuclei of the sTIL super-class "
               "(lymphocytes, plasma cells) with their centroid in a stroma cell")
#: Super-classes with a heatmap panel.
SUPER_SHOWN = ("tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus")


def hex_rgb(color: str) -> list[int]:
    color = color.lstrip("#")
    return [int(color[i:i + 2], 16) for i in (0, 2, 4)]


def _class_color(name: str) -> list[int]:
    return hex_rgb(tx.class_color(name, "#9e9e9e"))


def _feature(row: dict, probs: list[str]) -> dict:
    ring = [[round(float(x), 2), round(float(y), 2)] for x, y in zip(row["polygon_x"], row["polygon_y"], strict=True)]
    return {"type": "Feature", "id": f"nucleus-{row['nucleus_id']}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection", "isLocked": False, "name": row["super_class"],
                           "classification": {"name": row["class"], "color": _class_color(row["class"])},
                           "measurements": {"nucleus_id": int(row["nucleus_id"]),
                                            "objectness": round(float(row["objectness"]), 5),
                                            "area_um2": round(float(row["area_um2"]), 3),
                                            **{p: round(float(row[p]), 5) for p in probs}}}}


def _dsa_element(row: dict) -> dict:
    r, g, b = _class_color(row["class"])
    return {"type": "polyline", "closed": True, "group": row["class"], "label": {"value": row["class"]},
            "lineColor": f"rgb({r},{g},{b})", "fillColor": f"rgba({r},{g},{b},0.25)", "lineWidth": 1,
            "points": [[round(float(x), 2), round(float(y), 2), 0] for x, y in
                       zip(row["polygon_x"][:-1], row["polygon_y"][:-1], strict=True)],
            "user": {"nucleus_id": int(row["nucleus_id"]), "objectness": round(float(row["objectness"]), 5),
                     "super_class": row["super_class"]}}


def _empty_tile_schema():
    from ..model.detections import Detections
    from .predict import tile_table

    return tile_table(Detections.empty(tx.MAIN_CLASSES), 1.0, 1.0).schema


def write_outputs(plan, out_dir: str | Path, *, nms_iou: float) -> dict:
    """Merge the tiles of ``plan`` in ``out_dir`` into the files of the module docstring; returns the summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .predict import merged_keep, tile_path

    out_dir = Path(out_dir)
    keep = merged_keep(out_dir, plan.jobs, nms_iou, single_tile=plan.n_tiles_total == 1)
    schema = pq.read_schema(tile_path(out_dir, plan.jobs[0])) if plan.jobs else _empty_tile_schema()
    schema = pa.schema([pa.field("nucleus_id", pa.int64()), *schema])
    probs = [n for n in schema.names if n.startswith("prob_")]
    classes = [n.removeprefix("prob_") for n in probs]
    grid_px = plan.config.grid_um / plan.mpp
    main_counts = np.zeros((len(classes), *grid_shape(plan)), np.int64)
    next_id = 1
    with atomic_path(out_dir / "nuclei.parquet") as tmp_pq, atomic_path(out_dir / "nuclei.geojson") as tmp_geo, \
            atomic_path(out_dir / "annotations_dsa.json") as tmp_dsa:
        with pq.ParquetWriter(tmp_pq, schema) as writer, open(tmp_geo, "w", encoding="utf-8") as geo, \
                open(tmp_dsa, "w", encoding="utf-8") as dsa:
            geo.write('{"type": "FeatureCollection", "features": [\n')
            dsa.write(json.dumps({"name": f"NuCLS nuclei: {Path(plan.slide_path).name}",
                                  "description": "nuclei detected, classified and segmented by a NuCLS model "
                                                 "(nucls_utils.wsi)"})[:-1] + ', "elements": [\n')
            first = True
            for job in plan.jobs:
                rows = keep.get((job.row, job.col))
                if rows is None or not len(rows):
                    continue
                table = pq.read_table(tile_path(out_dir, job)).take(pa.array(rows))
                ids = np.arange(next_id, next_id + table.num_rows, dtype=np.int64)
                next_id += table.num_rows
                table = table.add_column(0, "nucleus_id", pa.array(ids)).cast(schema)
                writer.write_table(table)
                main_counts += count_grid(table.column("x").to_numpy(), table.column("y").to_numpy(),
                                          table.column("class").to_pylist(), classes, grid_px,
                                          main_counts.shape[1:])
                for row in table.to_pylist():
                    geo.write(("" if first else ",\n") + json.dumps(_feature(row, probs)))
                    dsa.write(("" if first else ",\n") + json.dumps(_dsa_element(row)))
                    first = False
            geo.write("\n]}\n")
            dsa.write("\n]}\n")
    return _summarise(plan, out_dir, classes, main_counts, grid_px)


def grid_shape(plan) -> tuple[int, int]:
    """Rows and columns of the summary's grid (cells of ``plan.config.grid_um``)."""
    grid_px = plan.config.grid_um / plan.mpp
    return math.ceil(plan.height / grid_px), math.ceil(plan.width / grid_px)


def tissue_grid(plan) -> np.ndarray:
    """Share of tissue in each grid cell, from the thumbnail's mask (area-averaged)."""
    import cv2

    gh, gw = grid_shape(plan)
    grid_px = plan.config.grid_um / plan.mpp
    mask = plan.tissue.astype(np.float32)
    # the mask covers the slide at thumb_downsample level-0 px per pixel; resample it onto the grid
    cell_in_thumb = grid_px / plan.thumb_downsample
    big_h, big_w = int(round(gh * cell_in_thumb)), int(round(gw * cell_in_thumb))
    padded = np.zeros((max(big_h, mask.shape[0]), max(big_w, mask.shape[1])), np.float32)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    padded = padded[:big_h, :big_w] if big_h and big_w else padded
    return cv2.resize(padded, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float64)


def stromal_tils(main_counts: np.ndarray, classes: list[str], tissue: np.ndarray, grid_um: float) -> dict:
    """The stroma rule (:data:`STROMA_RULE`) on a grid of nuclei counts ``(class, row, col)`` and the grid's tissue
    shares: ``stroma`` (bool grid), ``stroma_mm2``, ``stils_in_stroma`` and ``stil_density_per_mm2_stroma``."""
    cell_mm2 = (grid_um / 1000.0) ** 2
    supers = [tx.MAIN_TO_SUPER.get(c, c) for c in classes]
    total = main_counts.sum(0)

    def of(sup: str) -> np.ndarray:
        rows = [i for i, t in enumerate(supers) if t == sup]
        return main_counts[rows].sum(0) if rows else np.zeros_like(total)

    stroma = (tissue >= 0.5) & (of("tumor_any") * 2 <= total)
    stroma_mm2 = float((tissue * stroma).sum() * cell_mm2)
    stils = int(of("sTIL")[stroma].sum())
    return {"stroma": stroma, "stroma_mm2": stroma_mm2, "stils_in_stroma": stils,
            "stil_density_per_mm2_stroma": stils / stroma_mm2 if stroma_mm2 > 0 else None}


def count_grid(x: np.ndarray, y: np.ndarray, labels, classes: list[str], grid_px: float,
               shape: tuple[int, int]) -> np.ndarray:
    """Nuclei per class and grid cell: ``(len(classes), rows, cols)`` counts of the points ``(x, y)`` (level-0 px)."""
    index_of = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), *shape), np.int64)
    if len(x):
        k = np.array([index_of[c] for c in labels], np.int64)
        gx = np.clip((np.asarray(x) / grid_px).astype(int), 0, shape[1] - 1)
        gy = np.clip((np.asarray(y) / grid_px).astype(int), 0, shape[0] - 1)
        np.add.at(counts, (k, gy, gx), 1)
    return counts


def _summarise(plan, out_dir: Path, classes: list[str], main_counts: np.ndarray, grid_px: float) -> dict:
    """The summary dict, ``density_grid.npz`` (with ``cell_px``: a grid cell in thumbnail pixels), the heatmap."""
    cell_mm2 = (plan.config.grid_um / 1000.0) ** 2
    tissue = tissue_grid(plan)
    supers = [tx.MAIN_TO_SUPER.get(c, c) for c in classes]
    super_counts = {s: main_counts[[i for i, t in enumerate(supers) if t == s]].sum(0) for s in dict.fromkeys(supers)}
    total = main_counts.sum(0)
    til = stromal_tils(main_counts, classes, tissue, plan.config.grid_um)
    tissue_mm2 = float(plan.tissue.sum() * (plan.thumb_downsample * plan.mpp / 1000.0) ** 2)
    density = {s: np.where(tissue > 0.05, super_counts.get(s, np.zeros_like(total)) / np.maximum(tissue * cell_mm2,
                                                                                                 1e-12), np.nan)
               for s in SUPER_SHOWN}
    np.savez_compressed(out_dir / "density_grid.npz", grid_um=plan.config.grid_um,
                        cell_px=grid_px / plan.thumb_downsample, tissue=tissue,
                        stroma=til["stroma"], **{f"count_{c}": main_counts[i] for i, c in enumerate(classes)},
                        **{f"density_{s}": d for s, d in density.items()})
    dens = til["stil_density_per_mm2_stroma"]
    summary = {
        "slide": Path(plan.slide_path).name, "level0_px": [plan.width, plan.height], "mpp": plan.mpp,
        "mpp_source": plan.mpp_source, "reader": plan.reader, "model_scale": plan.model_scale,
        "tiles_total": plan.n_tiles_total, "tiles_with_tissue": len(plan.jobs),
        "tissue_mm2": round(tissue_mm2, 6), "nuclei": int(total.sum()),
        "nuclei_by_class": {c: int(main_counts[i].sum()) for i, c in enumerate(classes)},
        "nuclei_by_super_class": {s: int(v.sum()) for s, v in super_counts.items()},
        "stroma_mm2": round(til["stroma_mm2"], 6), "stils_in_stroma": til["stils_in_stroma"],
        "stil_density_per_mm2_stroma": round(dens, 2) if dens is not None else None,
        "stroma_rule": STROMA_RULE.format(grid=plan.config.grid_um),
        "config": {k: v for k, v in plan.config.__dict__.items()},
    }
    draw_heatmap(plan.thumbnail, density, plan.config.grid_um, grid_px / plan.thumb_downsample,
                 out_dir / "heatmap.png")
    from PIL import Image

    Image.fromarray(plan.thumbnail).save(out_dir / "thumbnail.png")
    Image.fromarray((plan.tissue * 255).astype(np.uint8)).save(out_dir / "tissue_mask.png")
    return summary


def draw_heatmap(thumbnail: np.ndarray, density: dict[str, np.ndarray], grid_um: float, cell_px: float,
                 path: Path) -> None:
    """:func:`nucls_utils.plots.wsi.plot_density_heatmap`, saved as a PNG."""
    import matplotlib.pyplot as plt

    from ..plots.wsi import plot_density_heatmap

    fig = plot_density_heatmap(thumbnail, density, grid_um, cell_px)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_summary(summary: dict, out_dir: str | Path) -> Path:
    path = Path(out_dir) / "summary.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    return path


def format_summary(summary: dict) -> str:
    """The slide summary a pathologist reads (nuclei per class, the stromal TIL density and its rule)."""
    lines = [f"{summary['slide']}: {summary['level0_px'][0]} x {summary['level0_px'][1]} px at "
             f"{summary['mpp']:g} um/px ({summary['mpp_source']}); tissue {summary['tissue_mm2']:.3f} mm^2 in "
             f"{summary['tiles_with_tissue']} of {summary['tiles_total']} tiles",
             f"nuclei: {summary['nuclei']}"]
    total = max(summary["nuclei"], 1)
    for name, n in sorted(summary["nuclei_by_class"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<22} {n:>8}  ({100 * n / total:5.1f} %)")
    lines.append("super-classes: " + ", ".join(f"{k} {v}" for k, v in summary["nuclei_by_super_class"].items()))
    dens = summary["stil_density_per_mm2_stroma"]
    lines.append(f"stromal TILs: {summary['stils_in_stroma']} in {summary['stroma_mm2']:.3f} mm^2 of stroma = "
                 + (f"{dens:.1f} sTILs per mm^2 of stroma" if dens is not None else "no stroma found"))
    lines.append(f"  rule: {summary['stroma_rule']}")
    return "\n".join(lines)


def geojson_problems(doc: dict) -> list[str]:
    """What makes ``doc`` not a valid FeatureCollection of closed, valid polygons with a classification name."""
    from shapely.geometry import shape

    problems = []
    if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        return ["not a FeatureCollection with a list of features"]
    for i, f in enumerate(doc["features"]):
        where = f"feature {i}"
        if f.get("type") != "Feature":
            problems.append(f"{where}: type is not Feature")
            continue
        geom = f.get("geometry") or {}
        if geom.get("type") != "Polygon":
            problems.append(f"{where}: geometry is not a Polygon")
            continue
        ring = geom["coordinates"][0]
        if len(ring) < 4 or ring[0] != ring[-1]:
            problems.append(f"{where}: the ring is not closed or has fewer than 4 positions")
        elif not shape(geom).is_valid and shape(geom).buffer(0).area <= 0:
            problems.append(f"{where}: the polygon has no area")
        name = (f.get("properties") or {}).get("classification", {}).get("name")
        if not name:
            problems.append(f"{where}: no classification name")
    return problems


def read_geojson(path: str | Path):
    """A GeoJSON of :func:`write_outputs` back as a DataFrame (``nucleus_id``, ``class``, ``n_vertices``, centroid)."""
    import pandas as pd
    from shapely.geometry import shape

    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = []
    for f in doc["features"]:
        geom = shape(f["geometry"])
        rows.append({"nucleus_id": int(f["properties"]["measurements"]["nucleus_id"]),
                     "class": f["properties"]["classification"]["name"],
                     "n_vertices": len(f["geometry"]["coordinates"][0]), "x": geom.centroid.x, "y": geom.centroid.y})
    return pd.DataFrame(rows, columns=["nucleus_id", "class", "n_vertices", "x", "y"])
