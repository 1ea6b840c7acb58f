"""Constrained agglomerative clustering of multi-rater boxes and the anchor table (notes section 2a)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage, to_tree

from nucls_utils.evaluation import box_iou
from nucls_utils.interrater.anchors import (
    NOT_ANNOTATED,
    UNDETECTED,
    anchor_truth_match,
    build_anchor_table,
    load_study_anchors,
)
from nucls_utils.interrater.clustering import cluster_boxes, condensed_iou_distance, medoid
from nucls_utils.io.errors import NuclsFormatError

COLUMNS = ["evalset", "participant", "fovname", "index", "raw_class", "type", "xmin", "ymin", "xmax", "ymax"]

# ---------------------------------------------------------------------------------------------------------------
# strategies

boxes_st = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 20), st.integers(1, 20)),
                    min_size=0, max_size=40)


def _as_array(raw: list[tuple[int, int, int, int]]) -> np.ndarray:
    a = np.array(raw, dtype=float).reshape(-1, 4)
    a[:, 2:] += a[:, :2]  # (x, y, w, h) -> corners
    return a


@st.composite
def grouped_boxes(draw):
    raw = draw(boxes_st)
    groups = draw(st.lists(st.integers(0, 4), min_size=len(raw), max_size=len(raw)))
    return _as_array(raw), np.array(groups, dtype=np.int64)


def _assert_clusters_valid(boxes, groups, labels, min_iou):
    n = len(boxes)
    assert labels.shape == (n,)
    if n == 0:
        return
    # labels 0..C-1 numbered by first occurrence
    _, first = np.unique(labels, return_index=True)
    assert np.array_equal(labels[np.sort(first)], np.arange(labels.max() + 1))
    iou = box_iou(boxes, boxes)
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(n, dtype=bool)
    assert (iou[same & off_diag] > min_iou).all()
    if groups is not None:
        assert not (same & off_diag & (groups[:, None] == groups[None, :])).any()


# ---------------------------------------------------------------------------------------------------------------
# clustering: properties


@settings(max_examples=80, deadline=None)
@given(grouped_boxes(), st.sampled_from([0.25, 0.5, 0.75]))
def test_constrained_clusters_respect_dontlink_and_min_iou(data, min_iou):
    boxes, groups = data
    labels = cluster_boxes(boxes, groups, min_iou)
    _assert_clusters_valid(boxes, groups, labels, min_iou)
    # the constraint only splits clusters of the unconstrained cut, it never merges across them
    free = cluster_boxes(boxes, None, min_iou)
    _assert_clusters_valid(boxes, None, free, min_iou)
    for c in np.unique(labels):
        assert len(np.unique(free[labels == c])) == 1
    # deterministic
    assert np.array_equal(labels, cluster_boxes(boxes.copy(), groups.copy(), min_iou))


@settings(max_examples=60, deadline=None)
@given(boxes_st.filter(lambda r: len(r) >= 2), st.sampled_from([0.25, 0.5, 0.75]))
def test_unconstrained_cut_matches_scipy_fcluster(raw, min_iou):
    boxes = _as_array(raw)
    z = linkage(condensed_iou_distance(boxes), method="complete")
    # merge height < T  <=>  cophenetic distance <= the float just below T
    ref = fcluster(z, np.nextafter(1.0 - min_iou, 0.0), criterion="distance")
    ours = cluster_boxes(boxes, None, min_iou)
    # same partition
    pairs_ours = ours[:, None] == ours[None, :]
    pairs_ref = ref[:, None] == ref[None, :]
    assert np.array_equal(pairs_ours, pairs_ref)


@settings(max_examples=40, deadline=None)
@given(boxes_st.filter(lambda r: len(r) >= 1))
def test_condensed_distance_and_medoid(raw):
    boxes = _as_array(raw)
    n = len(boxes)
    full = 1.0 - box_iou(boxes, boxes)
    iu = np.triu_indices(n, 1)
    assert np.allclose(condensed_iou_distance(boxes), full[iu])
    m = medoid(boxes)
    means = box_iou(boxes, boxes).mean(axis=1)
    assert means[m] >= means.max() - 1e-9
    assert m == int(np.flatnonzero(means >= means.max() - 1e-9)[0])  # ties -> lowest index


def test_condensed_distance_in_blocks(monkeypatch):
    from nucls_utils.interrater import clustering

    rng = np.random.default_rng(0)
    xy = rng.integers(0, 200, (300, 2))
    boxes = np.hstack([xy, xy + rng.integers(5, 25, (300, 2))]).astype(float)
    whole = condensed_iou_distance(boxes)
    monkeypatch.setattr(clustering, "_BLOCK_ROWS", 7)
    assert np.array_equal(condensed_iou_distance(boxes), whole)


def _notes_procedure(boxes: np.ndarray, groups: np.ndarray, min_iou: float, group_order: str) -> list[list[int]]:
    """A plain, node-object transcription of the notes' cut + demotion (slow, for cross-checking)."""
    n = len(boxes)
    if n <= 1:
        return [list(range(n))] if n else []
    root, nodes = to_tree(linkage(condensed_iou_distance(boxes), method="complete"), rd=True)
    parent = {}
    for nd in nodes:
        if not nd.is_leaf():
            parent[nd.left.id] = parent[nd.right.id] = nd.id
    tops, out = [], []

    def walk(nd):
        if nd.is_leaf():
            out.append([nd.id])
        elif nd.dist < 1 - min_iou:
            tops.append(nd)
        else:
            walk(nd.left)
            walk(nd.right)

    walk(root)
    for top in tops:
        leaves = top.pre_order()
        members, demoted = list(leaves), {}
        order = list(dict.fromkeys(int(groups[leaf]) for leaf in leaves))
        order = sorted(order) if group_order == "sorted" else order[::-1]
        for g in order:
            group_leaves = [leaf for leaf in leaves if groups[leaf] == g]
            for leaf in group_leaves[1:]:
                members.remove(leaf)
                chain, a = [], parent[leaf]
                while a != top.id:
                    chain.append(a)
                    a = parent[a]
                for anc in reversed(chain):
                    if anc not in demoted:
                        demoted[anc] = [leaf]
                        break
                    if not set(group_leaves) & set(demoted[anc]):
                        demoted[anc].append(leaf)
                        break
                else:
                    out.append([leaf])
        out += [members, *demoted.values()]
    return sorted(sorted(c) for c in out)


@settings(max_examples=80, deadline=None)
@given(grouped_boxes(), st.sampled_from([0.25, 0.5, 0.75]), st.sampled_from(["sorted", "reversed"]))
def test_demotion_matches_a_direct_transcription_of_the_notes(data, min_iou, group_order):
    boxes, groups = data
    labels = cluster_boxes(boxes, groups, min_iou)
    ours = sorted(np.flatnonzero(labels == c).tolist() for c in np.unique(labels))
    # whatever order the don't-link groups are visited in, the partition is the same
    assert ours == _notes_procedure(boxes, groups, min_iou, group_order)


# ---------------------------------------------------------------------------------------------------------------
# clustering: constructed cases


def test_edge_sizes_and_bad_input():
    assert cluster_boxes(np.empty((0, 4)), np.empty(0, dtype=int)).shape == (0,)
    assert cluster_boxes(np.array([[0, 0, 5, 5]]), np.array([3])).tolist() == [0]
    # all boxes identical and in different groups: one cluster (the reference's hand-made cut broke on this case)
    same = np.tile([0, 0, 10, 10], (4, 1))
    assert cluster_boxes(same, np.arange(4)).tolist() == [0, 0, 0, 0]
    # ... and all in one group: four singletons
    assert sorted(cluster_boxes(same, np.zeros(4, dtype=int)).tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="shape"):
        cluster_boxes(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="groups must have shape"):
        cluster_boxes(np.zeros((3, 4)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="xmax < xmin"):
        cluster_boxes(np.array([[5, 0, 1, 4]]))
    with pytest.raises(ValueError, match="min_iou"):
        cluster_boxes(np.zeros((2, 4)), None, 1.0)
    with pytest.raises(ValueError, match="empty"):
        medoid(np.empty((0, 4)))


def test_constraint_separates_two_overlapping_nuclei():
    # two participants (groups 0 and 1) each outline two neighbouring, overlapping nuclei
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [2, 0, 12, 10], [2, 0, 12, 10]], dtype=float)
    groups = np.array([0, 1, 0, 1])
    free = cluster_boxes(boxes, None, 0.25)
    assert free.tolist() == [0, 0, 0, 0]  # unconstrained: both nuclei merge
    constrained = cluster_boxes(boxes, groups, 0.25)
    assert constrained.tolist() == [0, 0, 1, 1]  # constrained: one cluster per nucleus


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1], [0, 2, 1], [1, 2, 0]])
def test_demotion_keeps_first_leaf_in_leaf_order(order):
    # a1 and a2 belong to one participant; b overlaps a2 much more than a1, so the tree is (a1, (b, a2)).
    a1, b, a2 = [0, 0, 10, 10], [3, 0, 13, 10], [4, 0, 14, 10]
    boxes = np.array([a1, b, a2], dtype=float)[order]
    groups = np.array([0, 1, 0])[order]
    z = linkage(condensed_iou_distance(boxes), method="complete")
    pos = {int(leaf): i for i, leaf in enumerate(leaves_list(z))}
    a_leaves = sorted((i for i in range(3) if groups[i] == 0), key=pos.get)
    kept, demoted = a_leaves
    b_leaf = next(i for i in range(3) if groups[i] == 1)
    labels = cluster_boxes(boxes, groups, 0.25)
    # the demoted leaf opens a cluster at its highest ancestor below the top node ({b, a2}) holding only itself,
    # so b stays with the kept leaf, as in the notes (the kept leaf is the first in leaf order, not the best match)
    assert labels[b_leaf] == labels[kept] != labels[demoted]


def test_demoted_leaves_of_other_groups_join_and_nest():
    # three participants outline two overlapping nuclei; participant 0 outlines the right one twice
    left, right = [0, 0, 10, 10], [1, 0, 11, 10]
    boxes = np.array([left, left, left, right, right, right, right], dtype=float)
    groups = np.array([0, 1, 2, 0, 1, 2, 0])
    labels = cluster_boxes(boxes, groups, 0.5)
    _assert_clusters_valid(boxes, groups, labels, 0.5)
    # demoted boxes of participants 1 and 2 join the cluster opened by participant 0's demoted box; participant 0's
    # second right box walks further down and ends alone
    assert len(np.unique(labels)) == 3
    assert labels[0] == labels[1] == labels[2]
    assert labels[4] == labels[5] != labels[0]
    assert sorted([labels[3] == labels[4], labels[6] == labels[4]]) == [False, True]
    assert cluster_boxes(boxes, None, 0.5).tolist() == [0] * 7


# ---------------------------------------------------------------------------------------------------------------
# anchor table: a hand-built study


ROSTER = pd.DataFrame({"participant": ["SP.1", "JP.1", "NP.1"], "group": ["SP", "JP", "NP"]})


def _hand_frame() -> pd.DataFrame:
    r = [
        # FOV f, U-control
        ("U-control", "SP.1", "f", 0, "tumor", "rectangle", 10, 10, 30, 30),
        ("U-control", "SP.1", "f", 1, "lymphocyte", "rectangle", 50, 50, 70, 70),
        ("U-control", "JP.1", "f", 0, "tumor", "rectangle", 11, 10, 30, 31),
        ("U-control", "JP.1", "f", 1, "plasma_cell", "rectangle", 50, 51, 70, 70),
        ("U-control", "NP.1", "f", 0, "fibroblast", "rectangle", 10, 11, 31, 30),
        ("U-control", "NP.1", "f", 1, "lymphocyte", "rectangle", 150, 150, 165, 165),
        ("U-control", "NP.1", "f", 2, "tumor", "rectangle", 0, 0, 150, 150),  # too big: dropped
        # FOV f, E (NP.1 did not annotate it)
        ("E", "SP.1", "f", 0, "tumor", "polyline", 10, 10, 30, 30),
        ("E", "SP.1", "f", 1, "tumor", "rectangle", 100, 10, 120, 30),
        ("E", "JP.1", "f", 0, "tumor", "rectangle", 10, 10, 30, 30),
        ("E", "JP.1", "f", 1, "lymphocyte", "polyline", 150, 150, 165, 166),
        # FOV g: SP.1 finds one nucleus in U-control, JP.1 annotates and finds nothing, NP.1 is absent
        ("U-control", "SP.1", "g", 0, "macrophage", "polyline", 5, 5, 20, 20),
        ("U-control", "JP.1", "g", -1, "", "", -1, -1, -1, -1),
    ]
    return pd.DataFrame(r, columns=COLUMNS)


def test_hand_built_anchor_table():
    t = build_anchor_table(_hand_frame(), ROSTER, min_iou=0.25)
    a = t.anchors
    assert a.index.name == "anchor_id"
    assert a.index.tolist() == ["10,10,30,30_f", "50,50,70,70_f", "150,150,165,165_f", "100,10,120,30_f",
                                "5,5,20,20_g"]
    assert a["medoid_source"].tolist() == ["Ps_U-control", "Ps_U-control", "NPs_U-control", "All", "Ps_U-control"]
    assert a["n_boxes"].tolist() == [5, 2, 2, 1, 1]
    assert a["fovname"].tolist() == ["f"] * 4 + ["g"]
    assert a.loc["100,10,120,30_f", ["xmin", "ymin", "xmax", "ymax"]].tolist() == [100, 10, 120, 30]
    assert t.evalsets == ["U-control", "E"]
    assert t.participants["participant"].tolist() == ["SP.1", "JP.1", "NP.1"]

    u, d, n = UNDETECTED, NOT_ANNOTATED, None
    expect_u = [["tumor", "tumor", "fibroblast"], ["lymphocyte", "plasma_cell", u], [u, u, "lymphocyte"], [u, u, u],
                ["macrophage", u, d]]
    expect_e = [["tumor", "tumor", d], [u, u, d], [u, "lymphocyte", d], ["tumor", u, d], [d, d, d]]
    assert t.labels["U-control"].columns.tolist() == ["SP.1", "JP.1", "NP.1"]
    assert t.labels["U-control"].values.tolist() == expect_u
    assert t.labels["E"].values.tolist() == expect_e
    assert t.clicks["E"].values.tolist() == [[True, False, False], [False] * 3, [False, True, False], [False] * 3,
                                             [False] * 3]
    # U-control never has clicks: SP.1's polyline in g is a manual trace, not a clicked suggestion
    assert not t.clicks["U-control"].values.any()

    assert t.n_matches("U-control", "All").tolist() == [3, 2, 1, 0, 1]
    assert t.n_matches("U-control", "Ps").tolist() == [2, 2, 0, 0, 1]
    assert t.n_matches("U-control", "NPs").tolist() == [1, 0, 1, 0, 0]
    assert t.n_matches("E", "SPs").tolist() == [1, 0, 0, 1, 0]
    assert t.n_matches("E", "JPs").tolist() == [1, 0, 1, 0, 0]
    assert t.n_matches("E", "All").name == "n_matches_All"
    assert t.unbiased_n_matches("Ps").equals(t.n_matches("U-control", "Ps").rename("UNBIASED_n_matches_Ps"))
    assert t.n_clicks("E", "Ps").tolist() == [1, 0, 1, 0, 0]

    mv = t.majority_vote("U-control", "Ps")
    assert mv["label"].tolist() == ["tumor", "lymphocyte", n, n, "macrophage"]  # tie -> alphabetical first
    assert mv["count"].tolist() == [2, 1, 0, 0, 1]
    mv_all = t.majority_vote("U-control", "All")
    assert mv_all.loc["10,10,30,30_f"].tolist() == ["tumor", 2]
    wide = t.set_table("E")
    assert wide.index.equals(a.index)
    assert wide["UNBIASED_n_matches_Ps"].tolist() == [2, 2, 0, 0, 1]
    assert wide["MV_inferred_label_Ps"].tolist() == ["tumor", n, "lymphocyte", "tumor", n]
    assert wide["n_algorithmic_clicks_All"].tolist() == [1, 0, 1, 0, 0]
    assert wide["JP.1"].tolist() == [row[1] for row in expect_e]
    # the dropped box is nowhere; every other box is in exactly one anchor
    assert len(t.boxes) == 11 and not ((t.boxes["xmax"] - t.boxes["xmin"]) >= 100).any()
    with pytest.raises(KeyError, match="B-control"):
        t.n_matches("B-control", "Ps")
    with pytest.raises(ValueError, match="who must be"):
        t.n_matches("E", "Ps+NPs")


def test_unconstrained_last_annotation_wins_and_duplicate_ids():
    rows = [("E", "SP.1", "f", 0, "tumor", "rectangle", 0, 0, 10, 10),
            ("E", "SP.1", "f", 1, "lymphocyte", "polyline", 0, 0, 10, 10),
            ("E", "JP.1", "f", 0, "fibroblast", "rectangle", 0, 0, 10, 10)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    free = build_anchor_table(frame, ROSTER, constrained=False)
    assert free.anchors.index.tolist() == ["0,0,10,10_f"]
    assert free.labels["E"].loc["0,0,10,10_f"].tolist() == ["lymphocyte", "fibroblast", NOT_ANNOTATED]
    assert free.clicks["E"].loc["0,0,10,10_f"].tolist() == [True, False, False]
    # same rows in another order: the annotation with the higher index still wins
    free2 = build_anchor_table(frame.iloc[::-1], ROSTER, constrained=False)
    pd.testing.assert_frame_equal(free.labels["E"], free2.labels["E"])
    con = build_anchor_table(frame, ROSTER, constrained=True)
    # two anchors with the same box: the second gets a suffix
    assert con.anchors.index.tolist() == ["0,0,10,10_f", "0,0,10,10_f_2"]
    assert con.labels["E"]["SP.1"].tolist() == ["tumor", "lymphocyte"]
    assert con.labels["E"]["JP.1"].tolist().count("fibroblast") == 1


def test_bad_frames_are_rejected():
    frame = _hand_frame()
    with pytest.raises(ValueError, match="NP.9"):
        build_anchor_table(frame.assign(participant="NP.9"), ROSTER)
    with pytest.raises(ValueError, match="lacks column"):
        build_anchor_table(frame.drop(columns=["type"]), ROSTER)
    with pytest.raises(ValueError, match="listed twice"):
        build_anchor_table(frame, pd.concat([ROSTER, ROSTER]))
    with pytest.raises(ValueError, match="group"):
        build_anchor_table(frame, ROSTER.assign(group=["SP", "XP", "NP"]))


def test_nothing_to_cluster(tmp_path):
    rows = [("E", "SP.1", "f", -1, "", "", -1, -1, -1, -1),
            ("E", "NP.1", "g", 0, "tumor", "rectangle", 0, 0, 200, 10)]  # the only box is too big
    t = build_anchor_table(pd.DataFrame(rows, columns=COLUMNS), ROSTER[["participant"]])
    assert len(t.anchors) == 0 and t.labels["E"].shape == (0, 3) and len(t.boxes) == 0
    assert t.participants["group"].tolist() == ["SP", "JP", "NP"]  # from the alias when the roster has no group
    assert len(t.majority_vote("E", "All")) == 0
    with pytest.raises(NuclsFormatError, match="participants.csv"):
        load_study_anchors(tmp_path)


def test_anchor_truth_match():
    t = build_anchor_table(_hand_frame(), ROSTER)
    truth = {"f": (np.array([[10, 10, 30, 30], [150, 150, 165, 165], [300, 300, 310, 310]]),
                   ["tumor", "lymphocyte", "fibroblast"]),
             "g": (np.empty((0, 4)), [])}
    m = anchor_truth_match(t, truth)
    assert m.tolist() == ["tumor", None, "lymphocyte", None, None]
    with pytest.raises(KeyError, match="'g'"):
        anchor_truth_match(t, {"f": truth["f"]})


# ---------------------------------------------------------------------------------------------------------------
# anchor table: properties

EVALSETS = ["U-control", "B-control", "E"]
PARTS = ["SP.1", "JP.1", "NP.1", "NP.2"]
CLASSES = ["tumor", "lymphocyte", "fibroblast"]


@st.composite
def study_frames(draw):
    rows = draw(st.lists(st.tuples(st.sampled_from(EVALSETS), st.sampled_from(PARTS), st.sampled_from(["f", "g"]),
                                   st.sampled_from(CLASSES), st.sampled_from(["rectangle", "polyline"]),
                                   st.integers(0, 30), st.integers(0, 30), st.integers(2, 16), st.integers(2, 16)),
                         min_size=1, max_size=40))
    out, counter = [], {}
    for s, p, f, c, typ, x, y, w, h in rows:
        k = counter.get((s, p, f), 0)
        counter[(s, p, f)] = k + 1
        out.append((s, p, f, k, c, typ, x, y, x + w, y + h))
    # one participant annotated FOV g in E and found nothing
    if ("E", "NP.2", "g") not in counter:
        out.append(("E", "NP.2", "g", -1, "", "", -1, -1, -1, -1))
    return pd.DataFrame(out, columns=COLUMNS)


ROSTER4 = pd.DataFrame({"participant": PARTS, "group": ["SP", "JP", "NP", "NP"]})


@settings(max_examples=60, deadline=None)
@given(study_frames(), st.sampled_from([0.25, 0.5, 0.75]), st.booleans(), st.randoms(use_true_random=False))
def test_anchor_table_is_deterministic_and_complete(frame, min_iou, constrained, rnd):
    t = build_anchor_table(frame, ROSTER4, min_iou=min_iou, constrained=constrained)
    perm = list(range(len(frame)))
    rnd.shuffle(perm)
    t2 = build_anchor_table(frame.iloc[perm].reset_index(drop=True), ROSTER4, min_iou=min_iou,
                            constrained=constrained)
    pd.testing.assert_frame_equal(t.anchors, t2.anchors)
    for s in t.evalsets:
        pd.testing.assert_frame_equal(t.labels[s], t2.labels[s])
        pd.testing.assert_frame_equal(t.clicks[s], t2.clicks[s])
    assert t.anchors.index.is_unique
    # every box in exactly one anchor, every anchor non-empty, sizes add up
    n_boxes = int((frame["index"] >= 0).sum())
    assert len(t.boxes) == n_boxes
    assert t.boxes["anchor_id"].isin(t.anchors.index).all()
    assert t.anchors["n_boxes"].sum() == n_boxes and (t.anchors["n_boxes"] >= 1).all()
    assert t.boxes.groupby("anchor_id").size().reindex(t.anchors.index).tolist() == t.anchors["n_boxes"].tolist()
    # anchor boxes are boxes of their own cluster; pairwise IOU within an anchor exceeds min_iou
    for aid, grp in t.boxes.groupby("anchor_id"):
        xy = grp[["xmin", "ymin", "xmax", "ymax"]].to_numpy(float)
        assert (xy == t.anchors.loc[aid, ["xmin", "ymin", "xmax", "ymax"]].to_numpy(float)).all(axis=1).any()
        iou = box_iou(xy, xy)
        assert (iou[~np.eye(len(xy), dtype=bool)] > min_iou).all()
        if constrained:
            assert not grp.duplicated(["evalset", "participant"]).any()
    # labels agree with the boxes (for the constrained table, every box's class is its participant's label)
    for s in t.evalsets:
        lab = t.labels[s]
        sb = t.boxes[t.boxes["evalset"] == s]
        got = lab.to_numpy()[lab.index.get_indexer(sb["anchor_id"]), lab.columns.get_indexer(sb["participant"])]
        if constrained:
            assert (got == sb["raw_class"].to_numpy()).all()
        assert t.n_matches(s, "All").sum() == sb.drop_duplicates(["anchor_id", "participant"]).shape[0]
        annotated = frame[frame["evalset"] == s].groupby("participant")["fovname"].agg(set)
        for p in PARTS:
            on_fovs = t.anchors["fovname"].isin(annotated.get(p, set()))
            assert (lab.loc[~on_fovs, p] == NOT_ANNOTATED).all()
            assert (lab.loc[on_fovs, p] != NOT_ANNOTATED).all()


def test_unconstrained_anchor_can_hold_two_boxes_of_one_participant():
    rows = [("U-control", "NP.1", "f", 0, "tumor", "rectangle", 0, 0, 10, 10),
            ("U-control", "NP.1", "f", 1, "tumor", "rectangle", 1, 0, 11, 10),
            ("U-control", "SP.1", "f", 0, "tumor", "rectangle", 0, 0, 11, 10)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    assert len(build_anchor_table(frame, ROSTER4, constrained=False).anchors) == 1
    con = build_anchor_table(frame, ROSTER4, constrained=True)
    assert len(con.anchors) == 2 and con.anchors["n_boxes"].tolist() == [2, 1]


# ---------------------------------------------------------------------------------------------------------------
# end to end: a simulated study written in the multi-rater layout


@pytest.fixture(scope="module")
def small_study(smoke_cohort, tmp_path_factory):
    from nucls_utils import io as nio
    from nucls_utils.crowd import make_roster, multi_rater_study
    from nucls_utils.crowd.participants import roster_frame

    records = nio.read_dataset(smoke_cohort)[:4]
    rng = np.random.default_rng(7)
    roster = make_roster(rng, 2, 2, 10)
    shown = {r.name: list(r.nuclei) for r in records}  # the machinery does not care where suggestions come from
    mr = multi_rater_study(records, roster, rng, {"B-control": shown, "E": shown}, nps_per_fov=(5, 8))
    study = tmp_path_factory.mktemp("study")
    nio.write_multirater(mr, study / "multirater")
    roster_frame(roster).to_csv(study / "participants.csv", index=False)
    return study, records, mr


def test_study_anchors_end_to_end(small_study):
    from nucls_utils import io as nio

    study, records, mr = small_study
    t = load_study_anchors(study, min_iou=0.25)
    frame = nio.multirater_frame(mr)
    boxes = frame[frame["index"] >= 0]
    kept = boxes[np.maximum(boxes["xmax"] - boxes["xmin"], boxes["ymax"] - boxes["ymin"]) < 100]
    # every multi-rater annotation is in exactly one anchor
    key = ["evalset", "participant", "fovname", "index"]
    assert len(t.boxes) == len(kept) and not t.boxes.duplicated(key).any()
    assert set(map(tuple, t.boxes[key].to_numpy().tolist())) == set(map(tuple, kept[key].to_numpy().tolist()))
    assert t.anchors["n_boxes"].sum() == len(kept)
    assert t.evalsets == ["U-control", "B-control", "E"]
    # shared anchors: many nuclei are detected in all three sets under the same anchor id
    shared = np.logical_and.reduce([t.n_matches(s, "All") > 0 for s in t.evalsets])
    assert shared.sum() >= 0.5 * len(records) * 5
    # clicks only where suggestions were shown
    assert not t.clicks["U-control"].values.any() and t.clicks["E"].values.any()
    # anchors detected by >= 2 pathologists in U-control are mostly real nuclei, and the P majority vote mostly
    # agrees with the planted class
    truth = {r.name: (np.array([n.box for n in r.nuclei], dtype=float).reshape(-1, 4),
                      [n.raw_class for n in r.nuclei]) for r in records}
    true_cls = anchor_truth_match(t, truth, min_iou=0.5)
    strong = t.unbiased_n_matches("Ps") >= 2
    assert true_cls[strong].notna().mean() > 0.8
    mv = t.majority_vote("U-control", "Ps")
    both = strong & true_cls.notna()
    assert (mv.loc[both, "label"] == true_cls[both]).mean() > 0.5
    # constrained vs unconstrained: the constraint only ever adds anchors
    free = load_study_anchors(study, min_iou=0.25, constrained=False)
    assert len(free.anchors) <= len(t.anchors)
