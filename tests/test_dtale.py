"""DTALE (nucls_utils.dtale): rule recovery on planted data, node statistics against brute force, Table S8 features
on the real sample, representations from a model, hyperbolic UMAP, plots."""

from __future__ import annotations

import re
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest

from nucls_utils import dtale as D
from nucls_utils import taxonomy as tx

matplotlib.use("Agg")

MAJOR, SUMSQ = "Size.MajorAxisLength", "Nucleus.Haralick.SumOfSquares.Range"
T_MAJOR, T_SUMSQ = 36.2, 2.1  # Fig. S14's lymphocyte rule (pixels at 0.2 um/px)


def planted(n: int = 3000, seed: int = 0):
    """Nuclei whose predicted class is a known function of two features; the rest is noise.

    lymphocyte iff MajorAxisLength <= 36.2 and SumSq.Range > 2.1; tumor iff MajorAxisLength > 36.2; stromal
    otherwise. The embedding puts each class around its own centre in the unit disk, with noise.
    """
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        MAJOR: rng.uniform(15.0, 60.0, n),
        SUMSQ: rng.uniform(0.0, 5.0, n),
        "Shape.Solidity": rng.uniform(0.8, 1.0, n),
        "Nucleus.Intensity.Mean": rng.normal(150.0, 20.0, n),
        "Shape.FSD1": rng.normal(0.0, 1.0, n),
    })
    lym = (X[MAJOR] <= T_MAJOR) & (X[SUMSQ] > T_SUMSQ)
    cls = np.where(lym, "lymphocyte", np.where(X[MAJOR] > T_MAJOR, "tumor_nonMitotic", "nonTILnonMQ_stromal"))
    centres = {"lymphocyte": (-0.5, 0.3), "tumor_nonMitotic": (0.5, 0.3), "nonTILnonMQ_stromal": (0.0, -0.55)}
    emb = np.array([centres[c] for c in cls]) + rng.normal(0.0, 0.08, (n, 2))
    return X, emb, cls


@pytest.fixture(scope="module")
def planted_fit():
    X, emb, cls = planted()
    tree = D.fit_tree(X, emb)  # the paper's depth 7 and 250 nuclei per leaf
    stats = D.node_statistics(tree, X, cls)
    return X, emb, cls, tree, stats


# ------------------------------------------------------------------------------------------------------------
# Table S8
# ------------------------------------------------------------------------------------------------------------
def test_table_s8_groups():
    sizes = {g: len(f) for g, f in D.FEATURE_GROUPS.items()}
    assert sizes == {"Size": 4, "Shape": 6, "FSD": 6, "Intensity": 12, "Edges": 8, "Haralick": 26}
    assert len(D.TABLE_S8_FEATURES) == len(set(D.TABLE_S8_FEATURES)) == 62
    assert D.feature_group("Shape.FSD3") == "FSD"
    assert D.feature_group(SUMSQ) == "Haralick"
    with pytest.raises(KeyError, match="not a Table S8 feature"):
        D.feature_group("Orientation.Orientation")
    assert D.short_name(MAJOR) == "MajorAxisLength"
    assert D.short_name(SUMSQ) == "Haralick.SumSq.Range"
    assert D.to_physical("Size.Area", 100.0) == pytest.approx(4.0)
    assert D.to_physical("Shape.Solidity", 0.9) == 0.9


# ------------------------------------------------------------------------------------------------------------
# Planted rules are recovered
# ------------------------------------------------------------------------------------------------------------
def test_discriminative_node_recovers_planted_rule(planted_fit):
    X, emb, cls, tree, stats = planted_fit
    assert tree.n_dropped_ == 0
    disc = D.best_nodes(stats, "precision")
    rep = D.best_nodes(stats, "f1")
    assert disc.loc["lymphocyte", "precision"] >= 0.9
    assert rep.loc["lymphocyte", "f1"] >= 0.9
    path = D.decision_path(tree, int(disc.loc["lymphocyte", "node"]))
    rules = {(r.feature, r.op): r.threshold for r in path.simplified}
    assert set(rules) == {(MAJOR, "<="), (SUMSQ, ">")}, path.text
    assert rules[(MAJOR, "<=")] == pytest.approx(T_MAJOR, abs=0.5)
    assert rules[(SUMSQ, ">")] == pytest.approx(T_SUMSQ, abs=0.1)
    # readable text, size thresholds in microns (36.2 px = 7.24 um)
    assert re.search(r"MajorAxisLength <= 7\.2\d? µm", path.text), path.text
    assert re.search(r"Haralick\.SumSq\.Range > 2\.1", path.text), path.text
    assert re.search(r"MajorAxisLength <= 36\.\d", D.describe_rules(path, units="pixels"))
    # the first maximum wins: no shallower node on the path reaches the same precision
    on_path = stats[(stats["class"] == "lymphocyte") & stats["node"].isin(path.nodes[:-1])]
    assert (on_path["precision"] < disc.loc["lymphocyte", "precision"]).all()
    # tumor: one rule on the major axis
    tumor = D.decision_path(tree, int(disc.loc["tumor_nonMitotic", "node"]))
    assert (MAJOR, ">") in {(r.feature, r.op) for r in tumor.simplified}
    fit = D.fit_statistics(tree, X, emb)
    assert fit["r2"] > 0.8 and fit["depth"] <= 7


def test_best_nodes_min_size_and_ties():
    stats = pd.DataFrame({"node": [0, 1, 2, 0, 1, 2], "class": ["a"] * 3 + ["b"] * 3,
                          "n_node": [1000, 300, 600, 1000, 300, 600],
                          "precision": [0.5, 0.9, 0.9, 0.0, 0.0, 0.0]})
    best = D.best_nodes(stats, "precision")
    assert best.loc["a", "node"] == 1  # first maximum
    assert not best.loc["b", "informative"]
    assert D.best_nodes(stats, "precision", min_size=500).loc["a", "node"] == 2
    with pytest.raises(KeyError, match="unknown metric"):
        D.best_nodes(stats, "accuracy")


def test_check_rule_directions(planted_fit):
    _, _, _, tree, stats = planted_fit
    disc = D.best_nodes(stats, "precision")
    paths = {c: D.decision_path(tree, int(n)) for c, n in disc["node"].items()}
    checks = D.check_rule_directions(paths).set_index(["family", "property"])["status"]
    assert checks[("lymphocyte", "small")] == "pass"
    assert checks[("tumor", "large")] == "pass"
    assert checks[("lymphocyte", "round")] == "not tested"
    assert checks[("fibroblast", "elongated")] == "not tested"
    bad = {"lymphocyte": [("Size.Area", ">", 200.0)], "sTIL": [("Shape.Circularity", "<=", 0.5)],
           "fibroblast": [("Shape.Eccentricity", ">", 0.9)]}
    checks = D.check_rule_directions(bad).set_index(["family", "property"])
    assert checks.loc[("lymphocyte", "small"), "status"] == "fail"
    assert checks.loc[("lymphocyte", "small"), "class"] == "lymphocyte"
    assert checks.loc[("lymphocyte", "round"), "status"] == "not tested"  # the raw name comes first
    assert checks.loc[("fibroblast", "elongated"), "status"] == "pass"
    assert checks.loc[("tumor", "large"), "status"] == "not tested"


# ------------------------------------------------------------------------------------------------------------
# Node statistics equal a brute-force count
# ------------------------------------------------------------------------------------------------------------
def test_node_statistics_equal_brute_force():
    from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

    rng = np.random.default_rng(3)
    n = 400
    X = rng.normal(size=(n, 3))
    Y = np.c_[X[:, 0] + 0.3 * rng.normal(size=n), X[:, 1] * X[:, 2]]
    y = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    y[X[:, 0] > 1.0] = "a"
    X[7, 1] = np.nan  # dropped everywhere
    tree = D.fit_tree(X, Y, max_depth=3, min_samples_leaf=20)
    assert tree.n_dropped_ == 1
    stats = D.node_statistics(tree, X, y)
    assert stats.attrs["n_dropped"] == 1
    keep = np.all(np.isfinite(X), axis=1)
    Xk, yk = X[keep], y[keep]
    t = tree.tree_
    visits = np.zeros((len(Xk), t.node_count), dtype=bool)
    for i, row in enumerate(Xk):  # walk every nucleus down the tree by hand
        v = 0
        while True:
            visits[i, v] = True
            if t.children_left[v] == -1:
                break
            v = t.children_left[v] if np.float32(row[t.feature[v]]) <= t.threshold[v] else t.children_right[v]
    internal = np.flatnonzero(t.children_left != -1)
    assert sorted(stats["node"].unique()) == list(internal)
    assert len(stats) == len(internal) * 3
    for r in stats.to_dict("records"):
        inn, isc = visits[:, r["node"]], yk == r["class"]
        assert (r["TP"], r["FP"], r["FN"], r["TN"]) == ((inn & isc).sum(), (inn & ~isc).sum(), (~inn & isc).sum(),
                                                        (~inn & ~isc).sum())
        assert r["n_node"] == inn.sum()
        assert r["precision"] == pytest.approx(precision_score(isc, inn, zero_division=0))
        assert r["recall"] == pytest.approx(recall_score(isc, inn))
        assert r["f1"] == pytest.approx(f1_score(isc, inn))
        assert r["mcc"] == pytest.approx(matthews_corrcoef(isc, inn))
    # paths agree with the hand walk
    for node in internal:
        path = D.decision_path(tree, int(node))
        ok = np.ones(len(Xk), dtype=bool)
        for rule in path:
            j = int(rule.feature[1:])
            v = Xk[:, j].astype(np.float32)
            ok &= v <= rule.threshold if rule.op == "<=" else v > rule.threshold
        np.testing.assert_array_equal(ok, visits[:, node])
        np.testing.assert_array_equal(D.node_members(tree, X, int(node))[keep], visits[:, node])


# ------------------------------------------------------------------------------------------------------------
# Real sample: Table S8 features from annotation masks
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_fovs(sample_dir):
    from nucls_utils.io.dataset import read_dataset
    from nucls_utils.io.masks import rasterize_instances

    out = []
    for rec in read_dataset(sample_dir)[:4]:  # the whole 17-FOV sample is in bench/bench_dtale_features.py
        out.append((rec, rec.read_rgb(), rasterize_instances(rec.nuclei, rec.image_shape)))
    return out


def test_real_fov_features(real_fovs):
    from histomicstk.features import compute_nuclei_features

    rec, rgb, lab = real_fovs[0]
    hema = D.hematoxylin_channel(rgb)
    with warnings.catch_warnings():  # skimage deprecations inside HistomicsTK (our wrapper silences them too)
        warnings.simplefilter("ignore")
        raw = compute_nuclei_features(lab, im_nuclei=hema)
    assert set(D.TABLE_S8_FEATURES) <= set(raw.columns)
    dropped = set(raw.columns) - set(D.TABLE_S8_FEATURES)
    assert all(re.match(r"Label|Identifier\.|Orientation\.|Size\.ConvexHullArea|Shape\.(FractalDimension|"
                        r"HuMoments|WeightedHuMoments)", c) for c in dropped), dropped
    frames = []
    for rec, rgb, lab in real_fovs:
        hema = D.hematoxylin_channel(rgb)
        assert hema[lab > 0].mean() > hema[lab == 0].mean() + 20  # nuclei are hematoxylin-rich
        f = D.nuclei_features(lab, hema, labels=np.arange(1, len(rec.nuclei) + 1))
        assert list(f.columns) == ["n_pixels", *D.TABLE_S8_FEATURES]
        frames.append(f)
    f = pd.concat(frames)
    complete = (~f[list(D.TABLE_S8_FEATURES)].isna().any(axis=1)).mean()
    print(f"\nreal sample subset: {len(f)} nuclei, {100 * complete:.1f}% with all 62 features")
    assert complete >= 0.95


def test_per_nucleus_matches_batched(real_fovs):
    rec, rgb, lab = real_fovs[1]
    hema = D.hematoxylin_channel(rgb)
    labels = np.arange(1, 9)
    small = lab.copy()
    small[(small > 0) & (small <= 3)] = 0  # labels 1-3 absent -> NaN rows
    a = D.nuclei_features(small, hema, labels=labels)
    b = D.nuclei_features(small, hema, labels=labels, per_nucleus=True)
    pd.testing.assert_frame_equal(a, b, rtol=1e-9, atol=1e-9)
    assert a.loc[[1, 2, 3]].drop(columns="n_pixels").isna().all().all()
    assert (a.loc[[1, 2, 3], "n_pixels"] == 0).all()
    tiny = D.nuclei_features(lab, hema, labels=[4], min_pixels=10 ** 6)
    assert tiny.drop(columns="n_pixels").isna().all().all() and tiny["n_pixels"].iloc[0] > 0


# ------------------------------------------------------------------------------------------------------------
# Representations
# ------------------------------------------------------------------------------------------------------------
class TruthPredictor:
    """A fake model: returns the FOV's true nuclei as detections (plus one low-score extra), 28 x 28 masks."""

    classes = tuple(c for c in tx.MAIN_CLASSES if c != tx.AMBIGUOUS)

    def __init__(self, samples, width=16):
        self.by_key = {s.rgb.tobytes(): s for s in samples}
        self.width = width

    def __call__(self, rgb):
        from nucls_utils.model import Detections

        s = self.by_key[np.ascontiguousarray(rgb).tobytes()]
        n = len(s)
        probs = np.full((n, len(self.classes)), 0.01)
        for i, c in enumerate(s.classes):
            probs[i, self.classes.index(c) if c in self.classes else 0] = 1.0
        probs /= probs.sum(1, keepdims=True)
        masks = np.zeros((n, 28, 28), np.float32)
        for i, m in enumerate(s.masks):
            h, w = m.shape
            rr = ((np.arange(28) + 0.5) / 28 * h).astype(int)
            cc = ((np.arange(28) + 0.5) / 28 * w).astype(int)
            masks[i] = m[rr][:, cc]
        boxes = np.r_[s.boxes.astype(float), [[0, 0, 20, 20]]]
        scores = np.r_[np.linspace(0.99, 0.6, n), 0.3]
        probs = np.r_[probs, probs[:1]]
        masks = np.r_[masks, masks[:1]]
        feats = np.random.default_rng(n).normal(size=(n + 1, self.width))
        return Detections(boxes, scores, probs, self.classes, masks, feats)


def test_extract_representations_from_truth(sample_dir):
    from nucls_utils.io.dataset import read_dataset
    from nucls_utils.model.data import load_fov_samples

    samples = load_fov_samples(read_dataset(sample_dir)[4:6], progress=False)
    table, maps = D.extract_representations(TruthPredictor(samples), samples, threshold=0.5, progress=False)
    assert len(table) == sum(len(s) for s in samples)  # the 0.3 detection is dropped
    assert table["matched"].all() and np.allclose(table["match_iou"], 1.0)
    for s in samples:
        t = table[table["fov"] == s.name]
        np.testing.assert_array_equal(t["true_class"].to_numpy(), s.classes)
        clear = t["true_class"] != tx.AMBIGUOUS
        assert (t.loc[clear, "pred_class"] == t.loc[clear, "true_class"]).all()
        assert (t["true_super"] == [tx.to_super(c) for c in s.classes]).all()
        lab = maps[s.name]
        assert lab.shape == s.rgb.shape[:2]
        np.testing.assert_array_equal(t["n_pixels"], np.bincount(lab.ravel(), minlength=len(t) + 1)[1:])
    assert D.representation_matrix(table).shape == (len(table), 16)
    prob_cols = [f"prob_{c}" for c in TruthPredictor.classes]
    assert np.allclose(table[prob_cols].sum(axis=1), 1.0, atol=1e-5)
    visible = table["n_pixels"] >= D.MIN_PIXELS
    complete = ~table[list(D.TABLE_S8_FEATURES)].isna().any(axis=1)
    assert complete[visible].mean() >= 0.95 and not complete[~visible].any()


@pytest.mark.filterwarnings("ignore:.*forward passes returned the model's maximum:RuntimeWarning")
def test_extract_representations_real_model(sample_dir):
    """An untrained small NucleusMaskRCNN: the classifier's features come through predict_fovs."""
    import torch

    from nucls_utils.io.dataset import read_dataset
    from nucls_utils.model import ModelConfig, build_model
    from nucls_utils.model.data import load_fov_samples

    torch.manual_seed(0)
    model = build_model(ModelConfig(weights=None, backbone_layer="layer3", scale_factor=1.0, scale_jitter=0.0,
                                    roi_size=7, representation=64, box_batch_size_per_image=64,
                                    rpn_pre_nms_top_n=300, rpn_post_nms_top_n=100, mask_channels=16,
                                    neck_channels=16, detections_per_img=50))
    samples = load_fov_samples(read_dataset(sample_dir)[:1], progress=False)
    table, maps = D.extract_representations(model, samples, threshold=0.0, interpretable=False, progress=False)
    assert len(table) > 0
    assert D.representation_matrix(table).shape == (len(table), 64)
    assert set(np.unique(maps[samples[0].name])) - {0} <= set(table["label"])


# ------------------------------------------------------------------------------------------------------------
# Hyperbolic UMAP
# ------------------------------------------------------------------------------------------------------------
def test_embed_poincare_disk():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(loc, 0.3, (60, 8)) for loc in (0.0, 3.0, -3.0)])
    raw = D.embed(x, seed=1, n_neighbors=10, projection="hyperboloid", n_epochs=60)
    disk = D.embed(x, seed=1, n_neighbors=10, n_epochs=60)
    assert raw.shape == disk.shape == (180, 2)
    assert np.all(np.hypot(disk[:, 0], disk[:, 1]) < 1.0)
    np.testing.assert_allclose(D.hyperboloid_to_poincare(raw), disk, atol=1e-6)  # deterministic given the seed
    z = np.sqrt(1 + (raw ** 2).sum(1))
    np.testing.assert_allclose(disk, raw / (1 + z)[:, None])
    with pytest.raises(ValueError, match="projection"):
        D.embed(x, seed=0, projection="klein")


# ------------------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------------------
def test_plots(planted_fit):
    import matplotlib.pyplot as plt

    from nucls_utils.plots import dtale as P

    X, emb, cls, tree, stats = planted_fit
    rep = D.best_nodes(stats, "f1")["node"].astype(int).to_dict()
    disc = D.best_nodes(stats, "precision")["node"].astype(int).to_dict()
    labels = pd.Series(cls, dtype=object)
    labels[::50] = np.nan
    figs = [
        P.plot_embedding(emb, labels, title="b"),
        P.plot_tree_overlay(tree, X, emb, highlight=disc, labels=cls),
        P.plot_node_members(tree, X, emb, disc),
        P.plot_step_by_step(tree, X, emb, disc["lymphocyte"], cls, "lymphocyte",
                            mark={"representative": rep["lymphocyte"], "discriminative": disc["lymphocyte"]}),
        P.plot_simplified_tree(tree, {f"{c} (F1)": n for c, n in rep.items()}
                               | {f"{c} (P)": n for c, n in disc.items()}, stats=stats),
        P.plot_simplified_tree(tree, max_depth=2),
        # the composed figures the registry names (7b/g; 7e/f/S15)
        P.plot_embedding_panels(emb, labels, pd.Series(cls, dtype=object)),
        P.plot_tree_overlays(tree, X, emb, disc, rep, cls),
    ]
    for fig in figs:
        assert isinstance(fig, plt.Figure)
        fig.canvas.draw()
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------------
# The benchmark runs
# ------------------------------------------------------------------------------------------------------------
def test_bench_dtale_features_quick(sample_dir):
    """``bench/bench_dtale_features.py --quick`` (about 6 s here): all three modes agree, every nucleus complete."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_dtale_features.py"
    proc = subprocess.run([sys.executable, str(bench), str(sample_dir), "--quick"], capture_output=True, text=True,
                          timeout=300, check=True)
    out = proc.stdout
    assert "4 FOVs" in out and "speed-up of batched" in out, out
    diffs = [float(v) for v in re.findall(r"max \|diff\| vs batched (\S+)", out)]
    assert len(diffs) == 3 and max(diffs) < 1e-6, out
    assert "nuclei with all 62 features: 100.00%" in out, out


def test_missing_rule_notes_name_unpredicted_classes_and_root_rules():
    table = pd.DataFrame({"class": ["sTIL", "tumor_any"],
                          "representative rule": [D.ROOT_RULE, "Perimeter > 21 µm"]})
    predicted = ["sTIL"] * 13 + ["tumor_any"] * 7
    notes = D.missing_rule_notes(table, predicted, ["tumor_any", "nonTIL_stromal", "sTIL"])
    assert set(notes) == {"nonTIL_stromal", "sTIL"}
    assert notes["nonTIL_stromal"].startswith("not measured: the model predicts 0 nonTIL_stromal nuclei of 20")
    assert notes["sTIL"].startswith("the root node: 65% of the explained nuclei are predicted sTIL")
    assert set(D.missing_rule_notes(table, predicted, ["nonTIL_stromal", "sTIL"], root=False)) == {"nonTIL_stromal"}
    assert D.describe_rules([]) == D.ROOT_RULE
