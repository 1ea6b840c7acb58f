"""Issue 19: the model on whole slides (nucls_utils.wsi) and the phantom's synthetic slide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from nucls_utils.model.architecture import ModelConfig, build_model
from nucls_utils.model.inference import core_bounds, predict_tiled, tile_starts
from nucls_utils.phantom.slide import SlideSpec, make_slide, read_truth
from nucls_utils.wsi import export
from nucls_utils.wsi import predict as wp
from nucls_utils.wsi.reader import SlideError, open_slide

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
from toy_detectors import dark_blobs, slow_dark_blobs  # noqa: E402

SPEC = SlideSpec(width_px=1800, height_px=700)  # 2 x 1 blocks, 2 pyramid levels
NO_NORM = wp.WsiConfig(normalise=False)
SMALL = dict(weights=None, backbone_layer="layer3", scale_factor=1.0, scale_jitter=0.0, roi_size=7,
             representation=64, box_batch_size_per_image=32, rpn_pre_nms_top_n=300, rpn_post_nms_top_n=100,
             mask_channels=16, neck_channels=16)


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "nucls_utils.wsi", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    return make_slide(tmp_path_factory.mktemp("slide") / "synthetic.tif", SPEC, seed=3, progress=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained small NuCLS model saved as notebook 05 saves one (its detections are arbitrary but fixed)."""
    d = tmp_path_factory.mktemp("model") / "tiny"
    d.mkdir()
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL)
    net = build_model(cfg)
    torch.save({"model_config": cfg.to_dict(), "state_dict": net.state_dict()}, d / "model.pt")
    return d


@pytest.fixture(scope="module")
def blobs_out(slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "blobs"
    summary = wp.predict_slide(slide, dark_blobs, out, NO_NORM, progress=False)
    return out, summary


# ---------------------------------------------------------------------------------------------------------------
# the synthetic slide and the readers
# ---------------------------------------------------------------------------------------------------------------
def test_synthetic_slide_is_a_pyramidal_tiff_with_its_scale_and_truth(slide):
    with open_slide(slide) as a, open_slide(slide, reader="openslide") as b:
        assert a.reader == "tifffile" and b.reader == "openslide"
        assert a.dimensions == b.dimensions == (1800, 700) and a.mpp == b.mpp == 0.25
        assert len(a.levels) == len(b.levels) == 2
        assert np.array_equal(a.read(1500, 300, 400, 500), b.read(1500, 300, 400, 500))  # past the right edge
        assert (a.read(1790, 690, 30, 30)[10:, :] == 255).all()  # beyond the slide is white
        thumb, ds = a.thumbnail(600)
        assert max(thumb.shape[:2]) == 600 and ds == pytest.approx(3.0)
    truth = read_truth(slide)
    assert len(truth) > 150 and truth["main_class"].nunique() >= 4
    assert ((truth["xmin"] <= truth["x"]) & (truth["x"] <= truth["xmax"])).all()
    from PIL import Image

    regions = np.asarray(Image.open(slide.with_suffix(".regions.png")))
    assert 0 in regions and len(set(np.unique(regions)) - {0}) >= 2  # glass and several tissue regions
    rd = SPEC.region_downsample
    on = regions[(truth["y"] // rd).astype(int), (truth["x"] // rd).astype(int)] > 0
    assert on.mean() > 0.9  # the truth's nuclei lie on tissue


def test_synthetic_slide_is_a_function_of_the_seed(tmp_path):
    spec = SlideSpec(width_px=400, height_px=300)
    a = make_slide(tmp_path / "a.tif", spec, seed=1, progress=False)
    b = make_slide(tmp_path / "b.tif", spec, seed=1, progress=False)
    c = make_slide(tmp_path / "c.tif", spec, seed=2, progress=False)
    pa, pb, pc = (tifffile.imread(p) for p in (a, b, c))
    assert np.array_equal(pa, pb) and not np.array_equal(pa, pc)
    pd.testing.assert_frame_equal(read_truth(a), read_truth(b))


def test_microns_per_pixel_from_each_source_and_bad_scales(tmp_path):
    rgb = np.full((64, 80, 3), 200, np.uint8)
    tifffile.imwrite(tmp_path / "aperio.tif", rgb, description="Aperio Image Library |AppMag = 20|MPP = 0.4990")
    tifffile.imwrite(tmp_path / "inch.tif", rgb, resolution=(50800, 50800), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "plain.tif", rgb)
    with open_slide(tmp_path / "aperio.tif") as s:
        assert s.mpp == pytest.approx(0.499) and s.mpp_source == "image description"
    with open_slide(tmp_path / "inch.tif") as s:
        assert s.mpp == pytest.approx(0.5) and s.mpp_source == "TIFF resolution tags"
    with open_slide(tmp_path / "plain.tif", mpp=0.25) as s:
        assert s.mpp == 0.25 and s.mpp_source == "--mpp"
    with pytest.raises(SlideError, match=r"plain\.tif: the TIFF gives no microns per pixel.*pass --mpp"):
        open_slide(tmp_path / "plain.tif")
    with pytest.raises(SlideError, match="outside 0.05-20"):
        open_slide(tmp_path / "plain.tif", mpp=0)
    tifffile.imwrite(tmp_path / "dpi.tif", rgb, resolution=(600, 600), resolutionunit="INCH")  # a 600-dpi scan tag
    with pytest.raises(SlideError, match=r"dpi\.tif: microns per pixel from the TIFF resolution tags is 42.3"):
        open_slide(tmp_path / "dpi.tif")
    (tmp_path / "fake.svs").write_text("not a slide")
    with pytest.raises(SlideError, match=r"fake\.svs: OpenSlide cannot read it"):
        open_slide(tmp_path / "fake.svs")
    with pytest.raises(SlideError, match="no such slide file"):
        open_slide(tmp_path / "missing.tif")


def test_cli_rejects_a_slide_without_scale_and_a_model_without_weights(tmp_path, model_dir):
    tifffile.imwrite(tmp_path / "plain.tif", np.full((300, 300, 3), 200, np.uint8))
    proc = _cli("predict", str(tmp_path / "plain.tif"), "--model", str(model_dir), "--out", str(tmp_path / "o1"),
                "--workers", "0")
    assert proc.returncode == 2 and "gives no microns per pixel" in proc.stderr and "--mpp" in proc.stderr
    assert not (tmp_path / "o1").exists()  # nothing half-written
    (tmp_path / "empty_model").mkdir()
    proc = _cli("predict", str(tmp_path / "plain.tif"), "--mpp", "0.25", "--model", str(tmp_path / "empty_model"),
                "--out", str(tmp_path / "o2"), "--workers", "0")
    assert proc.returncode == 2 and "no model.pt in the model directory" in proc.stderr
    assert not (tmp_path / "o2").exists()


def test_the_slide_tiles_are_those_of_tiled_inference():
    from nucls_utils.model import inference

    assert (wp.WsiConfig().tile, wp.WsiConfig().overlap) == (inference.DEFAULT_TILE, inference.DEFAULT_OVERLAP)
    with pytest.raises(ValueError, match="tissue_method"):
        wp.WsiConfig(tissue_method="magic")


def test_a_model_pixel_is_the_same_whichever_window_reads_it(slide):
    with open_slide(slide) as s:
        scale = s.mpp / wp.MODEL_MPP
        full = wp.read_model_window(s, scale, 0, 0, 900, 600)
        for x0, y0, x1, y1 in [(0, 0, 300, 200), (137, 91, 700, 555), (416, 416, 900, 600)]:
            part = wp.read_model_window(s, scale, x0, y0, x1, y1)
            assert np.array_equal(part, full[y0:y1, x0:x1]), (x0, y0)


# ---------------------------------------------------------------------------------------------------------------
# prediction
# ---------------------------------------------------------------------------------------------------------------
def _boxes(df_or_det) -> np.ndarray:
    if isinstance(df_or_det, pd.DataFrame):
        b = df_or_det[["xmin", "ymin", "xmax", "ymax"]].to_numpy()
    else:
        b = df_or_det.boxes.astype(np.float64)
    return b[np.lexsort(b.T[::-1])]


def test_the_slide_prediction_is_the_tiled_prediction_of_the_whole_resampled_slide(slide, tmp_path):
    cfg = NO_NORM.with_(tile=256, overlap=64, min_tissue=0.0)
    wp.predict_slide(slide, dark_blobs, tmp_path / "o", cfg, progress=False)
    table = pd.read_parquet(tmp_path / "o" / "nuclei.parquet")
    with open_slide(slide) as s:
        scale = s.mpp / wp.MODEL_MPP
        h, w = wp._model_shape(s.width, s.height, scale)
        whole = wp.read_model_window(s, scale, 0, 0, w, h)
    ref = predict_tiled(dark_blobs, whole, 256, 64, nms_iou=0.2, max_nucleus=30)
    assert len(table) == len(ref) > 100
    np.testing.assert_allclose(_boxes(table), _boxes(ref) / scale, atol=1e-4)
    assert table["nucleus_id"].tolist() == list(range(1, len(table) + 1))
    assert set(table["class"]) <= {"tumor_nonMitotic", "nonTILnonMQ_stromal", "lymphocyte"}
    # the same slide through OpenSlide: the same pixels, so the same table
    wp.predict_slide(slide, dark_blobs, tmp_path / "os", cfg, reader="openslide", progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "os" / "nuclei.parquet"), table)
    assert (table["super_class"] == table["class"].map({"tumor_nonMitotic": "tumor_any", "lymphocyte": "sTIL",
                                                        "nonTILnonMQ_stromal": "nonTIL_stromal"})).all()


@pytest.mark.parametrize("mpp", [0.2, 0.25])
def test_a_nucleus_cut_by_a_seam_is_reported_once(tmp_path, mpp):
    """Dark disks centred on the tiles' core boundaries (and on their corners): each is detected exactly once."""
    tile, overlap = 256, 64
    scale = mpp / wp.MODEL_MPP
    W = H = 700
    wm, hm = int(round(W * scale)), int(round(H * scale))
    cuts_x = [hi for _, hi in core_bounds(tile_starts(wm, tile, overlap), tile, wm)][:-1]
    cuts_y = [hi for _, hi in core_bounds(tile_starts(hm, tile, overlap), tile, hm)][:-1]
    centres = [(cx / scale, cy / scale) for cx in cuts_x for cy in cuts_y]  # on the corners
    centres += [(cx / scale, 60.0) for cx in cuts_x] + [(60.0, cy / scale) for cy in cuts_y]  # on the seams
    img = np.full((H, W, 3), (230, 190, 215), np.uint8)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 9.0 ** 2] = (70, 30, 110)
    tifffile.imwrite(tmp_path / "seams.tif", img, description=json.dumps({"mpp": mpp}))
    wp.predict_slide(tmp_path / "seams.tif", dark_blobs, tmp_path / "o",
                     NO_NORM.with_(tile=tile, overlap=overlap, min_tissue=0.0), progress=False)
    table = pd.read_parquet(tmp_path / "o" / "nuclei.parquet")
    assert len(table) == len(centres) >= 10
    d = np.hypot(table["x"].to_numpy()[:, None] - np.array(centres)[:, 0],
                 table["y"].to_numpy()[:, None] - np.array(centres)[:, 1])
    assert (d.min(0) < 1.5).all() and ((d < 1.5).sum(0) == 1).all()


def test_geojson_and_dsa_documents_validate_and_round_trip(blobs_out):
    out, summary = blobs_out
    table = pd.read_parquet(out / "nuclei.parquet")
    doc = json.loads((out / "nuclei.geojson").read_text())
    assert export.geojson_problems(doc) == []
    back = export.read_geojson(out / "nuclei.geojson")
    assert len(back) == len(table) == summary["nuclei"] > 100
    assert back["nucleus_id"].tolist() == table["nucleus_id"].tolist()
    assert back["class"].tolist() == table["class"].tolist()
    assert back["n_vertices"].tolist() == table["polygon_x"].map(len).tolist()
    assert back["class"].value_counts().to_dict() == summary["nuclei_by_class"] | {}  # same counts as the summary
    f0 = doc["features"][0]
    assert f0["properties"]["classification"]["color"] == export.hex_rgb("#e41a1c") or \
        f0["properties"]["classification"]["name"] != "tumor_nonMitotic"
    dsa = json.loads((out / "annotations_dsa.json").read_text())
    assert len(dsa["elements"]) == len(table)
    assert {e["group"] for e in dsa["elements"]} == set(table["class"])
    assert all(e["type"] == "polyline" and e["closed"] and len(e["points"][0]) == 3 for e in dsa["elements"])
    bad = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}, "properties": {}}]}
    assert len(export.geojson_problems(bad)) == 2  # ring not closed, no classification


def test_the_stroma_rule_on_a_hand_made_grid():
    """Cells: tumour-rich (not stroma), lymphocyte-rich (stroma), empty tissue (stroma), half glass (stroma, half its
    area), mostly glass (not stroma)."""
    classes = ["tumor_nonMitotic", "lymphocyte", "plasma_cell", "nonTILnonMQ_stromal"]
    counts = np.zeros((4, 1, 5), np.int64)
    counts[:, 0, 0] = (6, 2, 0, 0)  # tumour 6 of 8: not stroma
    counts[:, 0, 1] = (2, 3, 1, 2)  # tumour 2 of 8: stroma, 4 sTILs
    counts[:, 0, 3] = (0, 1, 0, 0)  # half tissue: stroma, 1 sTIL
    counts[:, 0, 4] = (0, 5, 0, 0)  # 40 % tissue: not stroma
    tissue = np.array([[1.0, 1.0, 1.0, 0.5, 0.4]])
    res = export.stromal_tils(counts, classes, tissue, grid_um=100.0)
    assert res["stroma"].tolist() == [[False, True, True, True, False]]
    assert res["stroma_mm2"] == pytest.approx(2.5 * 0.01)
    assert res["stils_in_stroma"] == 5
    assert res["stil_density_per_mm2_stroma"] == pytest.approx(5 / 0.025)


def test_overlap_below_twice_the_largest_anchor_is_refused(slide, model_dir, tmp_path):
    with pytest.raises(ValueError, match="at least twice the model's largest anchor"):
        wp.predict_slide(slide, model_dir, tmp_path / "o", wp.WsiConfig(overlap=32), progress=False)
    assert not (tmp_path / "o").exists()


def test_summary_counts_and_stromal_til_density(blobs_out, slide):
    out, s = blobs_out
    table = pd.read_parquet(out / "nuclei.parquet")
    assert s["nuclei_by_class"] == table["class"].value_counts().to_dict()
    assert sum(s["nuclei_by_super_class"].values()) == s["nuclei"]
    grid = np.load(out / "density_grid.npz")
    cell_mm2 = (50 / 1000) ** 2
    stroma = grid["stroma"]
    assert s["stroma_mm2"] == pytest.approx(float((grid["tissue"] * stroma).sum() * cell_mm2), abs=1e-4)
    g = (table[["y", "x"]].to_numpy() * 0.25 / 50).astype(int)
    in_stroma = stroma[g[:, 0], g[:, 1]] & (table["super_class"] == "sTIL").to_numpy()
    assert s["stils_in_stroma"] == int(in_stroma.sum())
    assert s["stil_density_per_mm2_stroma"] == pytest.approx(in_stroma.sum() / s["stroma_mm2"], rel=1e-3)
    text = export.format_summary(s)
    assert "sTILs per mm^2 of stroma" in text and "rule: stroma = grid cells" in text
    assert (out / "heatmap.png").stat().st_size > 10_000
    assert 0.3 < s["tissue_mm2"] / (1800 * 700 * 0.25 ** 2 / 1e6) < 0.8  # about the generator's tissue share


def test_resume_after_a_kill_gives_the_same_table(slide, tmp_path):
    cfg = NO_NORM.with_(tile=512, overlap=96)
    ref = wp.predict_slide(slide, dark_blobs, tmp_path / "ref", cfg, threads=1, progress=False)
    out = tmp_path / "killed"
    script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
              "from toy_detectors import slow_dark_blobs\nfrom nucls_utils.wsi import predict as wp\n"
              "wp.predict_slide(sys.argv[3], slow_dark_blobs, sys.argv[4], wp.WsiConfig(normalise=False, tile=512, "
              "overlap=96), threads=1, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(REPO), str(TESTS), str(slide), str(out)])
    def n_done() -> int:
        return len(list((out / "tiles").glob("*.parquet"))) if (out / "tiles").is_dir() else 0

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and n_done() < 4:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = n_done()
    assert 4 <= done < len(wp.plan_slide(slide, cfg).jobs)
    assert not (out / "nuclei.parquet").exists()
    resumed = wp.predict_slide(slide, slow_dark_blobs, out, cfg, threads=1, progress=False)
    assert resumed["run"]["tiles_reused"] == done and resumed["run"]["tiles_predicted"] > 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "nuclei.parquet"),
                                  pd.read_parquet(tmp_path / "ref" / "nuclei.parquet"))
    assert resumed["nuclei"] == ref["nuclei"]
    with pytest.raises(wp.RunMismatch, match="holds tiles of another run .differs in: config, model"):
        wp.predict_slide(slide, dark_blobs, out, cfg.with_(min_tissue=0.2), threads=1, progress=False)
    (out / "run.json").unlink()  # tiles whose origin is unknown are not trusted either
    with pytest.raises(wp.RunMismatch, match="tiles without a run.json"):
        wp.predict_slide(slide, slow_dark_blobs, out, cfg, threads=1, progress=False)


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_single_process_table(slide, model_dir, tmp_path):
    cfg = wp.WsiConfig()  # normalised, as the CLI does
    one = wp.predict_slide(slide, model_dir, tmp_path / "one", cfg, workers=0, threads=1, progress=False)
    two = wp.predict_slide(slide, model_dir, tmp_path / "two", cfg, workers=2, threads=1, progress=False)
    assert two["run"]["scheduler"] == "local cluster" and one["run"]["scheduler"] == "in process"
    a, b = (pd.read_parquet(tmp_path / d / "nuclei.parquet") for d in ("one", "two"))
    assert len(a) > 20
    pd.testing.assert_frame_equal(a, b)


def test_tile_mask_mode_writes_a_pyramid_independent_of_the_block_size(slide, tmp_path):
    from nucls_utils.baselines.tile_classifier import LeNetTiles, probability_map, save_tile_classifier
    from nucls_utils.wsi.tilemask import predict_tile_mask

    torch.manual_seed(0)
    net = LeNetTiles(32).eval()
    save_tile_classifier(net, tmp_path / "tc.pt")
    # an untrained classifier's probabilities hover around one value: threshold at their median on a piece of the
    # slide, so the mask has both values and a pixel near the threshold must come out the same in both block sizes
    with open_slide(slide) as s:
        thr = float(np.median(probability_map(net, wp.read_model_window(s, 1.25, 900, 300, 1300, 700))))
    # (every block predicted: which blocks hold enough tissue depends on the block size by design)
    a = predict_tile_mask(slide, tmp_path / "tc.pt", tmp_path / "a", block=1024, threshold=thr, min_tissue=0,
                          progress=False)
    b = predict_tile_mask(slide, tmp_path / "tc.pt", tmp_path / "b", block=300, threshold=thr, min_tissue=0,
                          progress=False)
    ma, mb = tifffile.imread(a["mask"]), tifffile.imread(b["mask"])
    assert ma.shape == (700, 1800) and set(np.unique(ma)) == {0, 255}
    assert 0.0 < a["nucleus_share"] < 1.0
    assert np.array_equal(ma, mb)
    with open_slide(a["mask"], reader="openslide") as m:
        assert m.mpp == 0.25 and m.dimensions == (1800, 700)
    with pytest.raises(FileExistsError):
        predict_tile_mask(slide, tmp_path / "tc.pt", tmp_path / "a", threshold=thr, progress=False)


def test_cli_predict_and_predict_cohort(tmp_path, model_dir):
    """The two commands of the README on small slides: the printed summary, the outputs, one folder per slide."""
    spec = SlideSpec(width_px=500, height_px=400)
    a = make_slide(tmp_path / "a.tif", spec, seed=5, progress=False)
    b = make_slide(tmp_path / "b.tif", spec, seed=6, progress=False)
    one = _cli("predict", str(a), "--model", str(model_dir), "--out", str(tmp_path / "one"), "--workers", "0",
               "--threads", "1", "--quiet")
    assert one.returncode == 0, one.stderr[-2000:]
    assert "sTILs per mm^2 of stroma" in one.stdout and "rule: stroma = grid cells" in one.stdout
    assert {"nuclei.parquet", "nuclei.geojson", "annotations_dsa.json", "heatmap.png"} <= {
        p.name for p in (tmp_path / "one").iterdir()}
    many = wp.predict_cohort([a, b], model_dir, tmp_path / "many", workers=0, threads=1, progress=False)
    assert [Path(s["out_dir"]).name for s in many] == ["a", "b"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / "nuclei.parquet"),
                                  pd.read_parquet(tmp_path / "many" / "a" / "nuclei.parquet"))
    with pytest.raises(ValueError, match="share a name"):
        wp.predict_cohort([a, a], model_dir, tmp_path / "bad", progress=False)
