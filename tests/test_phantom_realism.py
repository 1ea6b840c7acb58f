"""The realism report's instruments (nucls_utils.phantom.realism) on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage as ndi

from nucls_utils.io.dataset import FovRecord, Nucleus
from nucls_utils.phantom import realism
from nucls_utils.stains import stain_matrix

FOV_NAME = "TCGA-A1-A0SP-DX1_id-5ea4095addda5f8398977ebc_left-{x}_top-0_bottom-240_right-{x2}"


@pytest.fixture(autouse=True)
def one_thread():
    """Small fits run on one thread: with OpenMP / torch spreading them over cores that other processes hold, they
    run several times slower (gradient boosting and the patch CNN both)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def _disk(shape: tuple[int, int], cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def _he_image(h: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Beer-Lambert H&E: optical density = h * hematoxylin vector + e * eosin vector, a little noise."""
    od = h[..., None] * stain_matrix()[:, 0] + e[..., None] * stain_matrix()[:, 1]
    rgb = 255 * 10 ** (-od) + rng.normal(0, 2, od.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _planted_fov(tmp_path, rng, *, size: int = 240, r: int = 14, step: int = 60, name_x: int = 0,
                 blur: float = 0.0) -> tuple[FovRecord, list[np.ndarray]]:
    """A FOV of pink stroma with a grid of dark round nuclei; truth boxes (pixel corners) from the disks."""
    shape = (size, size)
    e = 0.25 + 0.05 * ndi.gaussian_filter(rng.normal(size=shape), 4)
    h = np.full(shape, 0.03)
    disks, nuclei = [], []
    for cy in range(step // 2, size, step):
        for cx in range(step // 2, size, step):
            d = _disk(shape, cy, cx, r)
            h[d] = 0.9
            e[d] = 0.1
            disks.append(d)
            nuclei.append(Nucleus.from_box("lymphocyte", cx - r, cy - r, cx + r + 1, cy + r + 1))
    rgb = _he_image(h, e, rng)
    if blur:
        rgb = np.stack([ndi.gaussian_filter(rgb[..., c].astype(float), blur) for c in range(3)], -1)
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    path = tmp_path / f"fov_{name_x}_{blur}.png"
    Image.fromarray(rgb).save(path)
    name = FOV_NAME.format(x=name_x, x2=name_x + size)
    return FovRecord(name, shape, tuple(nuclei), rgb_path=path), disks


# ------------------------------------------------------------------------------------------------------------
def test_class_matched_sample_keeps_real_proportions_without_repeats():
    real = ["tumor"] * 30 + ["lymphocyte"] * 20 + ["fibroblast"] * 10 + ["macrophage"] * 5
    syn = ["tumor"] * 100 + ["lymphocyte"] * 100 + ["fibroblast"] * 15 + ["macrophage"] * 50
    perm = np.random.default_rng(1).permutation(len(syn))
    syn = [syn[i] for i in perm]
    s_rows, r_rows = realism.class_matched_sample(syn, real, np.random.default_rng(0))
    assert len(np.unique(s_rows)) == len(s_rows)  # no synthetic row twice
    got_s = pd.Series([syn[i] for i in s_rows]).value_counts().to_dict()
    got_r = pd.Series([real[i] for i in r_rows]).value_counts().to_dict()
    # macrophages have 5 < 10 real nuclei: left out on both sides; every real nucleus of the other classes is kept
    assert got_r == {"tumor": 30, "lymphocyte": 20, "fibroblast": 10}
    # fibroblasts run short (15 for 10 real): one scale 1.5 for every class, so the real proportions hold
    assert got_s == {"tumor": 45, "lymphocyte": 30, "fibroblast": 15}


def test_class_matched_sample_rejects_when_no_class_is_shared():
    with pytest.raises(ValueError, match="no class has enough nuclei on both sides"):
        realism.class_matched_sample(["tumor"] * 50, ["lymphocyte"] * 50, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no class has enough nuclei on both sides"):
        realism.class_matched_sample(["tumor"] * 50, ["tumor"] * 9, np.random.default_rng(0))  # under min_real


def _two_samples(shift: float, n: int = 200, d: int = 5, fovs: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n, d)), rng.normal(shift, 1, (n, d))])
    y = np.repeat([0, 1], n)
    groups = np.concatenate([[f"syn{i % fovs}" for i in range(n)], [f"real{i % fovs}" for i in range(n)]])
    return X, y, groups


def test_c2st_auroc_chance_on_one_distribution_and_high_on_shifted():
    X, y, g = _two_samples(0.0, n=300)
    assert abs(realism.c2st_auroc(X, y, g, seed=0) - 0.5) < 0.1  # null SD about 0.03 at this size
    X, y, g = _two_samples(1.5)
    X[::7, 0] = np.nan  # missing features are allowed
    assert realism.c2st_auroc(X, y, g, seed=0) > 0.95


def test_folds_degrade_with_few_fovs_and_refuse_one():
    y = np.repeat([0, 1], 20)
    assert realism.n_folds(y, ["s1", "s2", "s3"] * 6 + ["s1", "s2"] + ["r1", "r2"] * 10) == 2
    X, _, _ = _two_samples(0.0, n=20)
    with pytest.raises(ValueError, match="at least two FOVs on each side"):
        realism.c2st_auroc(X, y, ["s1"] * 20 + ["r1", "r2"] * 10)


def _patches(rng, n: int, mean_rgb, size: int = 32) -> np.ndarray:
    return np.clip(rng.normal(mean_rgb, 25, (n, size, size, 3)), 0, 255).astype(np.uint8)


def test_fold_auroc_is_the_mean_of_each_folds_auroc_and_ignores_offsets_between_folds():
    from sklearn.metrics import roc_auc_score

    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    # each fold separates perfectly, but the second fold's model scores everything 10 higher
    score = np.array([0.1, 0.2, 0.3, 0.4, 10.1, 10.2, 10.3, 10.4])
    folds = [np.arange(4), np.arange(4, 8)]
    assert realism.fold_auroc(y, score, folds) == 1.0
    assert roc_auc_score(y, score) == 0.75  # ranked together, the offset costs AUROC
    rng = np.random.default_rng(0)
    y2, s2 = rng.integers(0, 2, 60), rng.normal(size=60)
    f2 = np.array_split(rng.permutation(60), 3)
    assert realism.fold_auroc(y2, s2, f2) == pytest.approx(np.mean([roc_auc_score(y2[f], s2[f]) for f in f2]))
    # a fold with one class has no AUROC and is left out; with none left the call fails
    assert realism.fold_auroc(y, score, [np.arange(4), np.array([0, 1])]) == 1.0
    with pytest.raises(ValueError, match="no fold holds both classes"):
        realism.fold_auroc(y, score, [np.array([0, 1])])


def test_patch_c2st_auroc_separates_colours_and_not_noise():
    rng = np.random.default_rng(0)
    n = 100
    y = np.repeat([0, 1], n)
    groups = np.concatenate([[f"s{i % 6}" for i in range(n)], [f"r{i % 6}" for i in range(n)]])
    kw = {"n_splits": 3, "seed": 0, "epochs": 6, "batch_size": 32}
    pink, blue = (200, 120, 170), (140, 130, 200)
    shifted = np.concatenate([_patches(rng, n, pink), _patches(rng, n, blue)])
    assert realism.patch_c2st_auroc(shifted, y, groups, **kw) > 0.9
    same = np.concatenate([_patches(rng, n, pink), _patches(rng, n, pink)])
    assert 0.3 < realism.patch_c2st_auroc(same, y, groups, **kw) < 0.7


def test_repeated_patch_c2st_is_the_mean_of_single_trainings_with_successive_seeds():
    rng = np.random.default_rng(1)
    n = 60
    y = np.repeat([0, 1], n)
    groups = np.concatenate([[f"s{i % 4}" for i in range(n)], [f"r{i % 4}" for i in range(n)]])
    patches = np.concatenate([_patches(rng, n, (200, 120, 170), 16), _patches(rng, n, (185, 122, 180), 16)])
    kw = {"n_splits": 2, "epochs": 2, "batch_size": 32}
    mean, runs = realism.repeated_patch_c2st(patches, y, groups, seed=5, repeats=3, **kw)
    singles = [realism.patch_c2st_auroc(patches, y, groups, seed=s, **kw) for s in (5, 6, 7)]
    assert runs == singles and mean == pytest.approx(np.mean(singles))
    assert len(set(np.round(runs, 6))) > 1  # the seed moves the result: why the report averages
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        realism.repeated_patch_c2st(patches, y, groups, repeats=0, **kw)


def test_smd_table_matches_hand_computation():
    syn = pd.DataFrame({"raw_class": ["tumor"] * 3 + ["lymphocyte"], "Size.Area": [1.0, 2.0, 3.0, 9.0]})
    real = pd.DataFrame({"raw_class": ["tumor"] * 3 + ["lymphocyte"], "Size.Area": [2.0, 4.0, np.nan, 9.0]})
    out = realism.smd_table(syn, real, classes=("tumor", "lymphocyte"), features={"Size.Area": "area"})
    tumor = out.set_index("class").loc["tumor"]
    # syn mean 2, var 1 (n 3); real mean 3, var 2 (n 2, NaN dropped); pooled var (2 * 1 + 1 * 2) / 3
    assert tumor["n_synthetic"] == 3 and tumor["n_real"] == 2
    assert tumor["smd"] == pytest.approx((2 - 3) / np.sqrt(4 / 3))
    assert tumor["sd_real"] == pytest.approx(np.sqrt(2))
    assert np.isnan(out.set_index("class").loc["lymphocyte", "smd"])  # one nucleus per side: no SD


def test_nucleus_label_image_recovers_a_planted_disk():
    rng = np.random.default_rng(0)
    shape = (80, 90)
    disk = _disk(shape, 40, 45, 12)
    htx = np.where(disk, 190.0, 60.0) + rng.normal(0, 8, shape)
    htx[10:20, 10:20] = 230  # another dark object outside the box must not leak in
    nucleus = Nucleus.from_box("tumor", 45 - 12, 40 - 12, 45 + 13, 40 + 13)
    lab = realism.nucleus_label_image(FovRecord("x", shape, (nucleus,)), htx)
    got = lab == 1
    assert set(np.unique(lab)) == {0, 1}
    assert (got & disk).sum() / (got | disk).sum() > 0.9


def test_image_statistics_focus_drops_after_blur(tmp_path):
    sharp, _ = _planted_fov(tmp_path, np.random.default_rng(0))
    blurred, _ = _planted_fov(tmp_path, np.random.default_rng(0), name_x=500, blur=2.0)
    stats = realism.image_statistics([sharp, blurred])
    assert stats["focus"].iloc[1] < 0.2 * stats["focus"].iloc[0]
    fractions = stats[["background_fraction", "nuclear_fraction", "eosin_fraction"]].sum(axis=1)
    assert np.allclose(fractions, 1.0)
    # 16 disks of radius 14 on 240 x 240 px: about 17 % nuclear pixels
    assert stats["nuclear_fraction"].iloc[0] == pytest.approx(16 * np.pi * 14 ** 2 / 240 ** 2, abs=0.03)
    assert stats["hospital"].tolist() == ["A1", "A1"]


def test_bootstrap_detection_is_perfect_on_clean_disks(tmp_path):
    # disks of radius 14 px (about 615 px, over the heuristic's 300 px minimum), 60 px apart: one object each
    record, _ = _planted_fov(tmp_path, np.random.default_rng(0))
    got = realism.bootstrap_detection([record])
    assert got["N"] == 16
    assert got["precision"] == got["recall"] == got["F1"] == 100.0


def _tiny_report(not_run: bool = False) -> realism.RealismReport:
    rng = np.random.default_rng(0)
    tests = [f"features: {g}" for g in ("all", *realism.C2ST_GROUPS)] + ["patches: 64 px CNN"]
    c2st = pd.DataFrame({"test": tests, "auroc": np.nan if not_run else rng.uniform(0.5, 0.9, len(tests))})
    c2st["auroc_min"], c2st["auroc_max"] = c2st["auroc"] - 0.05, c2st["auroc"] + 0.05
    c2st["runs"] = [1] * (len(tests) - 1) + [3]
    smd = pd.DataFrame([{"class": c, "feature": f, "smd": rng.normal(0, 1.5)} for c in realism.SMD_CLASSES
                        for f in realism.SMD_FEATURES.values()])
    boot = pd.DataFrame([{"dataset": "synthetic", "N": 100, "precision": 60.0, "recall": 55.0, "F1": 57.4},
                         {"dataset": "real", "N": 726, "precision": 39.0, "recall": 41.3, "F1": 40.1}])
    images = pd.DataFrame({"dataset": ["synthetic"] * 6 + ["real"] * 5,
                           **{s: rng.uniform(0, 1, 11) for s in ("focus", "background_fraction", "nuclear_fraction",
                                                                 "eosin_fraction", "h_mean", "e_mean")}})
    values = {"feature_c2st_auroc": c2st["auroc"].iloc[0], "patch_c2st_auroc": c2st["auroc"].iloc[-1],
              "smd_within_0.5_share": 0.25, "bootstrap_f1_gap": 17.3}
    summary = pd.DataFrame([{"quantity": q, "value": v, "target": realism.TARGETS[q],
                             "goal": realism.GOALS.get(q, np.nan), "meets": False,
                             "note": ""} for q, v in values.items()])
    return realism.RealismReport(summary, c2st, smd, boot, images, pd.DataFrame())


@pytest.mark.parametrize("not_run", [False, True])
def test_realism_figures_draw_and_save(tmp_path, not_run):
    from nucls_utils import figures
    from nucls_utils.plots import dataset as plotting

    report = _tiny_report(not_run)
    fig = plotting.plot_realism_report(report)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 4
    png, pdf = figures.save_figure(fig, "realism_test", tmp_path)
    assert png.stat().st_size > 10_000 and pdf.exists()
    text = report.describe_targets()
    assert text.count("NOT MET") == 4 and text.endswith("targets met: 0 of 4; not met: feature_c2st_auroc, "
                                                        "patch_c2st_auroc, smd_within_0.5_share, bootstrap_f1_gap")

    rng = np.random.default_rng(0)
    real = [rng.integers(0, 255, (320, 350, 3), dtype=np.uint8) for _ in range(3)]
    syn = [rng.integers(0, 255, (280, 400, 3), dtype=np.uint8) for _ in range(4)]  # shorter than 300: padded
    fig = plotting.plot_real_vs_synthetic_grid(real, syn, n=2, rows_per_side=2)
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 3 + 4 and {ax.get_images()[0].get_array().shape for ax in shown} == {(300, 300, 3)}
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["real (1)", "real (2)", "synthetic (1)", "synthetic (2)"]
    figures.save_figure(fig, "grid_test", tmp_path)
