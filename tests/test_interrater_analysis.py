"""The orchestration of notebooks 03-04 (nucls_utils.interrater.analysis) and its figures, on a small simulated
multi-rater study built here: truth inference against the generator's truth, EM vs majority vote, truth tables on
disk, agreement/accuracy tables, the redundancy simulation, and the paths without multi-rater data."""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import pandas as pd
import pytest

from nucls_utils import io as nio
from nucls_utils import taxonomy as tx
from nucls_utils.interrater import analysis as an
from nucls_utils.interrater.anchors import anchor_truth_match
from nucls_utils.interrater.redundancy import simulate_redundancy

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def study(smoke_cohort, tmp_path_factory):
    """Every smoke FOV annotated in U-control, B-control and E by 2 SPs, 2 JPs, 8 ordinary NPs and 5 unreliable
    NPs (planted accuracy 0.35), each FOV by 9-13 NPs; E shows the true nuclei as suggestions, B-control every
    other one."""
    from nucls_utils.crowd import make_roster, multi_rater_study
    from nucls_utils.crowd.participants import GROUP_PRIORS, roster_frame

    records = nio.read_dataset(smoke_cohort)
    rng = np.random.default_rng(3)
    roster = make_roster(rng, 2, 2, 8)
    bad_prior = {"NP": dataclasses.replace(GROUP_PRIORS["NP"], accuracy=0.35, concentration=8.0)}
    bad = make_roster(rng, 0, 0, 5, priors={**GROUP_PRIORS, **bad_prior})
    roster += [dataclasses.replace(p, alias=f"NP.{9 + i}") for i, p in enumerate(bad)]
    shown_e = {r.name: list(r.nuclei) for r in records}
    shown_b = {r.name: list(r.nuclei)[::2] for r in records}
    mr = multi_rater_study(records, roster, rng, {"B-control": shown_b, "E": shown_e}, nps_per_fov=(9, 13))
    root = tmp_path_factory.mktemp("mr_study")
    nio.write_multirater(mr, root / "multirater", {r.name: r.rgb_path for r in records})
    roster_frame(roster).to_csv(root / "participants.csv", index=False)
    return root, records


@pytest.fixture(scope="module")
def inferred(study):
    root, records = study
    s = an.load_multirater_study(root)
    tables = an.anchor_tables(s, progress=False)
    truth = {iou: an.build_truth_tables(t, evalsets=None if iou == an.PRIMARY_IOU else ["E"])
             for iou, t in tables.items()}
    tt = truth[an.PRIMARY_IOU]
    an.attach_generator_truth(tt, records)
    return s, truth, tt, records


def test_study_is_read_with_roster_and_images(inferred):
    s, truth, tt, records = inferred
    assert s.simulated and len(s.fovnames) == len(records)
    assert set(s.images) == set(s.fovnames)
    assert tt.evalsets == ["U-control", "B-control", "E"]
    assert set(truth) == set(an.CLUSTERING_IOUS) and truth[0.5].evalsets == ["E"]
    t = tt.truth["E"]
    for who in ("Ps", "NPs"):
        # EM ran exactly on the anchors detected by >= 2 members of the group in U-control
        ran = t[f"EM_inferred_label_{who}"].notna() | (t[f"n_matches_{who}"] == 0)
        scope = t[f"UNBIASED_n_matches_{who}"] >= 2
        assert (t.loc[~scope, f"EM_inferred_label_{who}"].isna()).all()
        assert ran[scope].all()
        probs = t.loc[scope, [c for c in t.columns if c.startswith("EM_prob_") and c.endswith(f"_{who}")
                              and not c.startswith(("EM_prob_main_", "EM_prob_super_"))]]
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        sup = t.loc[scope, [c for c in t.columns if c.startswith("EM_prob_super_") and c.endswith(f"_{who}")]]
        np.testing.assert_allclose(sup.sum(axis=1), 1.0)
    # boundary EM only where suggestions were shown
    assert t["EM_decision_boundary_is_correct"].notna().any()
    assert tt.truth["U-control"]["EM_decision_boundary_is_correct"].isna().all()


def test_ptruth_agrees_with_the_generator(inferred):
    _, _, tt, _ = inferred
    for s in tt.evalsets:
        t = tt.truth[s]
        strong = t[(t["n_matches_Ps"] >= 2) & t["generator_truth_raw"].notna() & t["EM_inferred_label_Ps"].notna()]
        assert len(strong) > 100
        gen = strong["generator_truth_raw"].map(tx.to_super)
        acc = (strong["EM_inferred_label_super_Ps"] == gen).mean()
        assert acc >= 0.8, (s, acc)
        # P-truth nuclei are mostly real nuclei
        real = t.loc[an.final_anchors(t, "main")]
        assert real["generator_truth_raw"].notna().mean() > 0.9


def test_generator_truth_is_anchor_truth_match(inferred, study):
    _, _, tt, records = inferred
    boxes = {r.name: (np.array([n.box for n in r.nuclei], float).reshape(-1, 4), [n.raw_class for n in r.nuclei])
             for r in records}
    direct = anchor_truth_match(tt.table, boxes, 0.5)
    pd.testing.assert_series_equal(tt.truth["E"]["generator_truth_raw"].fillna("-"),
                                   direct.reindex(tt.truth["E"].index).fillna("-"), check_names=False,
                                   check_dtype=False)


def test_em_is_at_least_as_accurate_as_majority_vote_for_np_labels(inferred):
    _, _, tt, _ = inferred
    vs = an.truth_vs_generator(tt)
    assert set(vs["metric"]) == {"label_accuracy", "detection_f1", "class_accuracy"}
    wide = vs.pivot_table(index=["evalset", "who", "level", "metric"], columns="method", values="value")
    nps = wide.xs(("NPs", "label_accuracy"), level=("who", "metric"))
    assert (nps["EM"] >= nps["MV"] - 1e-9).all(), nps
    # with five unreliable NPs on the roster, modelling reliability pays off on average
    assert nps["EM"].mean() > nps["MV"].mean()
    conf = an.generator_confusion(tt, "E", "Ps", "super")
    assert np.trace(conf.reindex(index=conf.columns, fill_value=0).to_numpy()) / conf.to_numpy().sum() > 0.8


def test_truth_tables_round_trip(inferred, tmp_path):
    _, _, tt, _ = inferred
    paths = an.write_truth_tables(tt, tmp_path / "stage")
    assert {p.name for p in paths} >= {"truth_E.csv", "labels_U-control.csv", "participants.csv",
                                       "truth_tables.json"}
    back = an.read_truth_tables(tmp_path / "stage")
    assert back.evalsets == tt.evalsets and back.min_iou == tt.min_iou and back.constrained
    for s in tt.evalsets:
        pd.testing.assert_frame_equal(back.truth[s], tt.truth[s], check_exact=False, rtol=1e-12,
                                      check_dtype=False, check_index_type=False, check_column_type=False)
        pd.testing.assert_frame_equal(back.labels[s], tt.labels[s], check_index_type=False,
                                      check_column_type=False)
        pd.testing.assert_frame_equal(back.clicks[s], tt.clicks[s], check_index_type=False,
                                      check_column_type=False)
    assert back.members("Ps") == tt.members("Ps")
    # analyses give the same answers from the tables on disk
    pd.testing.assert_frame_equal(an.participant_accuracy(back), an.participant_accuracy(tt))
    assert an.np_label_roc_table(back)["micro"] == an.np_label_roc_table(tt)["micro"]
    assert an.read_truth_tables(tmp_path / "nothing") is None


def test_no_multirater_data(tmp_path, sample_dir):
    assert an.locate_multirater("nucls", sample_dir, tmp_path, "nucls_sample") is None
    assert an.locate_multirater("nucls", None, tmp_path, "x") is None
    with pytest.raises(FileNotFoundError, match="run notebook 02 first"):
        an.locate_multirater("synthetic", None, tmp_path, "synthetic_smoke")


def test_release_layout_without_roster(study, tmp_path):
    root, records = study
    mr = nio.read_multirater(root / "multirater")
    fov = records[0].name
    sub = {("EVAL_SET_3" if s == "E" else s, p, f): v for (s, p, f), v in mr.items() if f == fov}
    nio.write_multirater(sub, tmp_path / "release" / "multirater")
    found = an.locate_multirater("nucls", tmp_path / "release", tmp_path, "release")
    assert found == tmp_path / "release" / "multirater"
    s = an.load_multirater_study(found)
    assert not s.simulated and set(s.frame["evalset"]) == {"U-control", "B-control", "E"}
    assert s.participants["participant"].tolist()[:2] == ["SP.1", "SP.2"]
    assert set(s.participants["group"]) == {"SP", "JP", "NP"}


def test_group_labels_and_truth_helpers(inferred):
    _, _, tt, _ = inferred
    lab = tt.labels["E"]
    g = an.group_labels(lab, "super")
    assert g.shape == lab.shape
    special = lab.isin(["undetected", "DidNotAnnotateFOV"])
    assert (g[special] == lab[special]).to_numpy()[special.to_numpy()].all()
    vals = set(np.unique(g.to_numpy().astype(str)))
    assert vals <= set(tx.SUPER_CLASSES) | {"undetected", "DidNotAnnotateFOV"}
    t = tt.truth["E"]
    final = an.final_anchors(t, "main")
    labs = an.truth_series(t, "Ps", "main").loc[final]
    assert labs.notna().all() and not labs.isin(["undetected", tx.AMBIGUOUS]).any()
    em = an.np_label_frame(t, "super")
    assert "label" in em.columns and "EM_prob_undetected" in em.columns and "EM_prob_sTIL" in em.columns


def test_agreement_and_accuracy_tables(inferred):
    s, truth, tt, records = inferred
    acc = an.accuracy_by_set(tt)
    assert set(acc["evalset"]) == set(tt.evalsets) and acc["f1"].between(0, 1).all()
    ps = acc[acc["group"].isin(["SP", "JP"])]["mcc_pooled_ovr"].mean()
    assert ps > acc[acc["group"] == "NP"]["mcc_pooled_ovr"].mean()
    tests = an.paired_set_tests(acc, ("f1", "mcc_pooled_ovr"), "E", "U-control")
    assert set(tests["group"]) == {"Ps", "NPs"} and tests["pvalue"].between(0, 1).all()
    det = an.np_label_detection(tt)
    assert 0.5 < det["ap"] <= 1 and det["n"] > 50
    pooled = an.np_label_detection_pooled(truth)
    assert pooled["n"] > det["n"]
    roc = an.np_label_roc_table(tt, "E", "main")
    assert 0.5 < roc["micro"] <= 1 and roc["n"] > 50
    boot, values = an.np_label_auroc_bootstrap(tt, n_boot=30, seed=1)
    assert list(boot["evalset"]) == tt.evalsets and (boot["micro_low"] <= boot["micro_high"]).all()
    assert len(an.auroc_set_tests(values)) == 3
    alpha = an.alpha_table(truth)
    two = alpha[(alpha["min_detections"] == 2) & (alpha["min_iou"] == 0.25)].set_index(["level", "raters"])
    assert two.loc[("main", "Ps"), "alpha"] > two.loc[("main", "NPs"), "alpha"]
    assert (alpha.groupby(["min_iou", "level", "raters"])["n_anchors"].apply(
        lambda n: n.is_monotonic_decreasing)).all()
    counts = an.anchor_counts(truth)
    n0 = counts[counts["min_detections"] == 0].set_index("min_iou")["n_proposals"]
    assert n0[0.25] < n0[0.75]  # stricter thresholds split more
    pairs = an.kappa_pairs(tt, modes=("classification",))
    med = pairs[pairs["evalset"] == "E"].groupby("pair_group")["kappa"].median()
    assert med["Ps-Ps"] > med["NPs-NPs"]
    assert len(an.kappa_group_tests(pairs)) == 6
    mds = an.kappa_mds(pairs, seed=0)
    assert len(mds) == len(tt.participants) and set(mds["group"]) == {"SP", "JP", "NP"}
    sa = an.self_agreement_table(tt)
    assert set(sa["evalset"]) == {"E", "B-control"} and sa["kappa"].between(-1, 1).all()
    clicked = an.clicked_share_table(tt)
    e, b = (clicked[clicked["evalset"] == x]["psegmented"].mean() for x in ("E", "B-control"))
    assert e > b > 0  # more suggestions shown in E
    conf = an.pooled_confusion(tt)
    assert "non-existent" in conf.index and "undetected" in conf.columns
    tally = an.detection_tally(tt)
    ease = an.ease_of_detection(tally, "Ps")
    assert (ease[ease["min_detections"] == 0]["percent"] == 100).all()
    d16 = an.detected_by_at_least(tt, x=12)
    assert list(d16["class"]) == ["sTILs", "fibroblasts"] and d16["percent"].between(0, 100).all()


def test_boundaries_of_perfect_suggestions(inferred):
    s, _, tt, records = inferred
    bt = an.boundary_table(tt, s, records)
    assert set(bt["evalset"]) == {"B-control", "E"}
    # the suggestions were the true nuclei: a clicked boundary on a matched true nucleus is that nucleus
    matched = bt["dice"].dropna()
    assert len(matched) > 50 and (matched > 0.999).mean() > 0.95
    share = an.boundary_share_per_fov(tt)
    assert share["percent_good"].between(0, 100).all()
    assert share.groupby("evalset")["percent_good"].mean()["E"] > share.groupby("evalset")["percent_good"].mean()[
        "B-control"]


def test_constraint_and_examples(inferred, study):
    s, _, tt, records = inferred
    unc = an.build_truth_tables(an.anchor_tables(s, [0.25], constrained=False, progress=False)[0.25], whos=["Ps"],
                                evalsets=["E"])
    summary, ct = an.constraint_effect(tt, unc, "E", "super", records)
    assert summary["n_anchors"].iloc[0] >= summary["n_anchors"].iloc[1]
    assert {"recall_overlapping", "recall_isolated"} <= set(summary.columns)
    assert ct.to_numpy().sum() > 0
    ex = an.clustering_example(tt, s)
    assert ex["image"] is not None and len(ex["anchors"]) and (ex["boxes"]["fovname"] == ex["fovname"]).all()
    de = an.dendrogram_example(tt)
    assert len(de["boxes"]) == len(de["labels"]) == len(de["participants"])
    assert len(np.unique(de["labels"])) >= len(np.unique(de["labels_unconstrained"]))


def test_redundancy_pipeline(inferred):
    _, _, tt, _ = inferred
    labels, fov, truth, info = an.redundancy_inputs(tt, "E", "super", min_nps=16)
    assert info["min_nps_used"] <= 13 and info["n_fovs"] >= 1  # no FOV has 16 NPs: falls back to the densest
    assert labels.shape[1] == info["n_nps"] and len(truth) == len(labels)
    sim = simulate_redundancy(labels, fov, truth, ks=[2, 4, 8], n_realisations=3, rng=np.random.default_rng(0),
                              progress=False)
    const, target = an.hold_total_constant(sim)
    assert (const["n_unique_NPs"] == target).all()
    summary = an.summarize_redundancy(sim)
    assert set(summary["k"]) == {2, 4, 8} and (summary["n"] == 3).all()
    med = summary[summary["metric"] == "auroc_micro"].set_index("k")["median"]
    assert med[8] >= med[2] - 0.05
    findings = an.redundancy_findings(summary)
    table = an.redundancy_paper_vs_run(findings, target_nps=target, n_realisations=3, info=info)
    assert table["quantity"].str.contains("stromal").any()
    g_labels, _, g_truth, g_info = an.redundancy_inputs(tt, "E", "super", 16, "generator")
    assert g_info["truth_source"] == "generator" and not (g_truth == tx.AMBIGUOUS).any()


def test_plateau_k():
    summary = pd.DataFrame({"metric": "mcc", "k": range(2, 10),
                            "median": [0.2, 0.5, 0.7, 0.8, 0.88, 0.895, 0.9, 0.9]})
    # gain 0.7 from k = 2: 95 % of it is reached at 0.865 (k = 6), 99 % at 0.893 (k = 7), 80 % at 0.76 (k = 5)
    assert an.plateau_k(summary, "mcc", 0.95) == 6
    assert an.plateau_k(summary, "mcc", 0.99) == 7
    assert an.plateau_k(summary, "mcc", 0.8) == 5
    flat = summary.assign(median=0.5)
    assert an.plateau_k(flat, "mcc") == 2
    assert np.isnan(an.plateau_k(summary, "auroc_micro"))


def test_paper_vs_run_formatting():
    from nucls_utils import paper

    t = an.paper_vs_run([("fig3a.np_detection_ap", "a", 0.123456, ""), ("fig4e.np_auroc_pvalue", "b", np.nan, "x"),
                         (None, "c", 12345.6, ""), ("fig4d.self_kappa_ps:sd", "d", 3.0, "")])
    assert t["this_run"].tolist()[0] == 0.123 and t["paper"].tolist()[1] == "< 0.001"
    assert t["this_run"].tolist()[2] == 1.23e4 and t["paper"].tolist()[2] is None
    # the paper's values and sources come from the paper module, by key
    assert t["paper"].tolist()[0] == paper.value("fig3a.np_detection_ap")
    assert t["paper"].tolist()[3] == paper.sd("fig4d.self_kappa_ps") and t["source"].tolist()[3] == "Fig. 4d"
    with pytest.raises(KeyError, match="no paper number 'fig3a.np_detection_apx'"):
        an.paper_vs_run([("fig3a.np_detection_apx", "a", 0.1, "")])


def test_figures_render(inferred):
    import matplotlib.pyplot as plt

    from nucls_utils import plots
    from nucls_utils.plots import agreement as ip

    s, truth, tt, records = inferred
    plots.set_style()
    acc = an.accuracy_by_set(tt)
    rocs = {lv: an.np_label_roc_table(tt, "E", lv) for lv in ("main", "super")}
    pairs = an.kappa_pairs(tt, modes=("classification",))
    boot, values = an.np_label_auroc_bootstrap(tt, n_boot=10)
    alpha = an.alpha_table(truth)
    bt = an.boundary_table(tt, s, records)
    tally = an.detection_tally(tt)
    sim = pd.DataFrame({"realisation": 0, "k": [2, 3], "n_unique_NPs": 5, "det_f1": [0.5, 0.6], "mcc_pooled_ovr": [0.4, 0.5],
                        "auroc_micro": [0.8, 0.9], "auroc_macro": [0.7, 0.8], "auroc_sTIL": [0.8, 0.9]})
    figs = [
        ip.plot_clustering_example(an.clustering_example(tt, s)),
        ip.plot_dendrogram_example(an.dendrogram_example(tt)),
        ip.plot_detection_accuracy(acc[acc["evalset"] == "E"], an.np_label_detection(tt)),
        ip.plot_np_label_roc(rocs),
        ip.plot_confusion(an.pooled_confusion(tt), "c"),
        ip.plot_mds(an.kappa_mds(pairs)),
        ip.plot_redundancy(an.summarize_redundancy(sim), an.summarize_redundancy(sim)),
        ip.plot_clicked_share(an.clicked_share_table(tt)),
        ip.plot_boundary_accuracy(bt),
        ip.plot_self_agreement(an.self_agreement_table(tt)),
        ip.plot_roc_by_set({x: an.np_label_roc_table(tt, x) for x in tt.evalsets}, boot, acc,
                           an.auroc_set_tests(values)),
        ip.plot_anchors_and_alpha(an.anchor_counts(truth), alpha),
        ip.plot_alpha_by_iou(alpha),
        ip.plot_pairwise_kappa(pairs, an.kappa_group_tests(pairs)),
        ip.plot_super_class_accuracy(acc[acc["evalset"] == "E"], an.participant_accuracy(tt, "E", "super"),
                                     rocs["super"]),
        ip.plot_boundaries_s5(an.boundary_share_per_fov(tt), bt),
        ip.plot_confusions_s7({"Ps": an.pooled_confusion(tt)}, {"Ps": an.tally_by_truth(tt)}),
        ip.plot_ease_of_detection(tally, {"NPs": an.ease_of_detection(tally, "NPs")}),
        ip.plot_truth_vs_generator(an.truth_vs_generator(tt), an.generator_confusion(tt)),
        ip.no_data_figure("nothing"),
    ]
    for f in figs:
        assert len(f.axes) >= 1
        plt.close(f)


def test_ptruth_composition(inferred):
    _, _, tt, _ = inferred
    comp = an.ptruth_composition(tt)
    assert set(comp["level"]) == {"raw", "main", "super"}
    sums = comp.groupby(["evalset", "level"])["percent"].sum()
    np.testing.assert_allclose(sums, 100.0)
    assert set(comp.loc[comp["level"] == "super", "class"]) <= set(tx.SUPER_CLASSES)
    # grouping sums class probabilities, so anchors mostly turn from 'undetected' into nuclei, not back (the only
    # exception: a raw label replaced by 'unlabeled' because nobody gave the argmax)
    n = comp.groupby(["evalset", "level"])["n"].sum().unstack()
    assert (n["super"] >= n["raw"] - 2).all() and (n["main"] >= n["raw"] - 2).all()
