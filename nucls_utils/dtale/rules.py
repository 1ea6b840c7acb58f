"""DTALE's rules: decision paths root -> node in physical units, the representative and discriminative rule of
each class, the tree's settings, notebook 07's "paper vs this run" table and, on the synthetic cohort, whether the
rules point the way the generator drew the nuclei."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import paper
from .features import PHYSICAL_UNITS, short_name
from .tree import _parents_depths, best_nodes

__all__ = [
    "DEFAULT_PROPERTIES", "DecisionPath", "ROOT_RULE", "Rule", "check_rule_directions", "class_rules",
    "decision_path", "describe_rules", "missing_rule_notes", "paper_vs_run", "simplify_rules",
    "tree_settings",
]


class Rule(NamedTuple):
    """One split on a path: ``feature op threshold`` with ``op`` in ``'<='``, ``'>'``; threshold in pixel units."""

    feature: str
    op: str
    threshold: float

    def format(self, units: str = "physical", digits: int = 3) -> str:
        """``'MajorAxisLength <= 7.24 µm'`` (``units='physical'``) or ``'MajorAxisLength <= 36.2'`` (pixels)."""
        value, unit = self.threshold, ""
        if units == "physical" and self.feature in PHYSICAL_UNITS:
            factor, unit = PHYSICAL_UNITS[self.feature]
            value = value * factor
        elif units not in ("physical", "pixels"):
            raise ValueError(f"units must be 'physical' or 'pixels', not {units!r}")
        text = f"{short_name(self.feature)} {self.op} {value:.{digits}g}"
        return f"{text} {unit}" if unit else text


#: The rule text of the root node (an empty decision path).
ROOT_RULE = "(all nuclei)"


def describe_rules(rules: Iterable[Rule], units: str = "physical", digits: int = 3) -> str:
    """Rules joined with ``' AND '`` (:data:`ROOT_RULE` for an empty path)."""
    parts = [Rule(*r).format(units, digits) for r in rules]
    return " AND ".join(parts) if parts else ROOT_RULE


def simplify_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Keep the tightest bound per (feature, direction), in order of first appearance."""
    best: dict[tuple[str, str], Rule] = {}
    for r in rules:
        r = Rule(*r)
        key = (r.feature, r.op)
        old = best.get(key)
        if old is None or (r.threshold < old.threshold if r.op == "<=" else r.threshold > old.threshold):
            best[key] = r
    order = list(dict.fromkeys((Rule(*r).feature, Rule(*r).op) for r in rules))
    return [best[k] for k in order]


@dataclass
class DecisionPath:
    """Rules from the root to ``node``; iterating gives the :class:`Rule` s, ``str()`` the readable text."""

    node: int
    nodes: list[int]
    rules: list[Rule]
    text: str
    units: str = "physical"
    simplified: list[Rule] = field(default_factory=list)

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __str__(self) -> str:
        return self.text


def decision_path(tree, node: int, feature_names: Sequence[str] | None = None, *, units: str = "physical",
                  digits: int = 3) -> DecisionPath:
    """The splits from the root to ``node``.

    Parameters
    ----------
    feature_names : names of the tree's input columns (default: ``tree.dtale_feature_names_``)
    units : 'physical' (size thresholds in microns / square microns) or 'pixels', for the text only; the
        :class:`Rule` thresholds are always in the features' own (pixel) units.

    Returns
    -------
    DecisionPath with ``nodes`` (root ... node), ``rules`` (one per edge), ``text`` (e.g.
    ``'MajorAxisLength <= 7.24 µm AND Haralick.SumSq.Range > 2.1'``) and ``simplified`` (:func:`simplify_rules`).
    """
    t = tree.tree_
    if not 0 <= node < t.node_count:
        raise ValueError(f"node {node} is not in the tree (0 ... {t.node_count - 1})")
    names = list(feature_names) if feature_names is not None else (
        getattr(tree, "dtale_feature_names_", None) or [f"f{j}" for j in range(t.n_features)])
    parent, _ = _parents_depths(tree)
    nodes = [node]
    while parent[nodes[-1]] != -1:
        nodes.append(int(parent[nodes[-1]]))
    nodes.reverse()
    rules = []
    for a, c in zip(nodes[:-1], nodes[1:], strict=True):
        op = "<=" if c == t.children_left[a] else ">"
        rules.append(Rule(names[t.feature[a]], op, float(t.threshold[a])))
    return DecisionPath(node=int(node), nodes=[int(v) for v in nodes], rules=rules,
                        text=describe_rules(rules, units, digits), units=units, simplified=simplify_rules(rules))


def class_rules(tree, stats: pd.DataFrame, *, feature_names: Sequence[str] | None = None, min_size: int | None = None,
                units: str = "physical") -> tuple[pd.DataFrame, dict[str, list[Rule]]]:
    """Each class's representative (best F1) and discriminative (best precision) node, with readable rules.

    Returns
    -------
    table : one row per class: node ids, sizes, F1 / precision / recall of both nodes, and their decision paths
        (``units`` for the text: size thresholds in microns by default).
    rules : class -> the (simplified) rules of its discriminative path, for :func:`check_rule_directions`.
    """
    rep = best_nodes(stats, "f1", min_size=min_size)
    dis = best_nodes(stats, "precision", min_size=min_size)
    rows, rules = [], {}
    for cls in rep.index:
        r, d = rep.loc[cls], dis.loc[cls]
        rp = decision_path(tree, int(r["node"]), feature_names, units=units)
        dp = decision_path(tree, int(d["node"]), feature_names, units=units)
        rules[cls] = dp.simplified
        rows.append({"class": cls, "n_predicted": int(r["n_class"]),
                     "representative node": int(r["node"]), "rep. size": int(r["n_node"]), "rep. F1": r["f1"],
                     "rep. precision": r["precision"], "rep. recall": r["recall"],
                     "representative rule": describe_rules(rp.simplified, units),
                     "discriminative node": int(d["node"]), "disc. size": int(d["n_node"]),
                     "disc. precision": d["precision"], "disc. F1": d["f1"], "disc. recall": d["recall"],
                     "discriminative rule": describe_rules(dp.simplified, units),
                     "informative": bool(r["informative"])})
    return pd.DataFrame(rows), rules


def missing_rule_notes(table: pd.DataFrame, predicted, classes: Iterable[str], *, root: bool = True) -> dict[str, str]:
    """Why a class of ``classes`` has no rule, or only the root, in a :func:`class_rules` ``table`` built from the
    predictions ``predicted`` (one label per explained nucleus): class -> a sentence, for the classes that need one
    (a class the model never predicts has no node to score; a class predicted for so many nuclei that "every
    nucleus" is its best-F1 statement has the root as its representative node; ``root=False`` leaves that case out)."""
    predicted = pd.Series(np.asarray(predicted, dtype=object))
    by_class = table.set_index("class") if len(table) else pd.DataFrame(columns=["representative rule"])
    notes = {}
    for cls in classes:
        n = int((predicted == cls).sum())
        if cls not in by_class.index:
            notes[cls] = (f"not measured: the model predicts {n} {cls} nuclei of {len(predicted)}, so DTALE has no "
                          "such class to explain")
        elif root and by_class.loc[cls, "representative rule"] == ROOT_RULE:
            notes[cls] = (f"the root node: {n / max(len(predicted), 1):.0%} of the explained nuclei are predicted "
                          f"{cls}, so 'every nucleus' is the best-F1 statement")
    return notes


def tree_settings(profile: str, n_nuclei: int, max_depth: int = 0, min_samples_leaf: int = 0) -> tuple[int, int]:
    """The tree's ``(max_depth, min_samples_leaf)``: the values given, or (0) the defaults: the paper's depth; the
    paper's minimum leaf where the profile says so, else the profile's share of the explained nuclei (at least its
    floor; ``tree_min_leaf_share``, ``tree_min_leaf_floor`` of :class:`nucls_utils.profiles.StudySettings`)."""
    from ..profiles import settings

    s = settings(profile)
    depth = int(max_depth) or int(paper.value("fig7.tree_max_depth"))
    if min_samples_leaf:
        leaf = int(min_samples_leaf)
    elif s.tree_min_leaf_share is None:
        leaf = int(paper.value("fig7.tree_min_samples_leaf"))
    else:
        leaf = max(s.tree_min_leaf_floor, int(round(s.tree_min_leaf_share * n_nuclei)))
    return depth, leaf


def paper_vs_run(rules: Mapping[str, pd.DataFrame], *, max_depth: int, min_samples_leaf: int, n_explained: int,
                 notes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Notebook 07's "paper vs this run" table from :func:`class_rules` tables per level (``'super'``, ``'main'``).

    ``notes``: class -> why its row is empty or degenerate (:func:`missing_rule_notes`). Returns ``quantity, paper,
    this_run, note, source, paper_key`` (paper values from :mod:`nucls_utils.paper`), every cell as text.
    """
    notes = dict(notes or {})

    def val(level: str, cls: str, col: str):
        r = rules[level].set_index("class") if len(rules[level]) else pd.DataFrame()
        return round(float(r.loc[cls, col]), 3) if cls in r.index else None

    main = rules["main"].set_index("class") if len(rules["main"]) else pd.DataFrame()
    lym_rule = main.loc["lymphocyte", "representative rule"] if "lymphocyte" in main.index else None
    rows = [paper.row("fig7.disc_precision_tumor", "discriminative precision, tumor",
                      val("super", "tumor_any", "disc. precision"), notes.get("tumor_any", "")),
            paper.row("fig7.disc_precision_stroma", "discriminative precision, stroma",
                      val("super", "nonTIL_stromal", "disc. precision"), notes.get("nonTIL_stromal", "")),
            paper.row("fig7.disc_precision_stils", "discriminative precision, sTILs",
                      val("super", "sTIL", "disc. precision"), notes.get("sTIL", "")),
            paper.row("figS14.lymphocyte_rep_f1", "lymphocyte representative F1", val("main", "lymphocyte", "rep. F1")),
            paper.row("figS14.lymphocyte_rep_rule", "lymphocyte representative rule", lym_rule,
                      notes.get("lymphocyte", "")),
            paper.row("fig7.tree_max_depth", "tree max_depth", max_depth),
            paper.row("fig7.tree_min_samples_leaf", "tree min_samples_leaf", min_samples_leaf,
                      "" if min_samples_leaf == paper.value("fig7.tree_min_samples_leaf")
                      else "scaled to the number of nuclei explained here"),
            {"quantity": "nuclei explained", "paper": None, "this_run": n_explained, "note": "", "source": None,
             "paper_key": None}]
    def text(v) -> str:
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else str(v)

    return pd.DataFrame(rows).map(text)


_SIZE = ("Size.Area", "Size.MajorAxisLength", "Size.MinorAxisLength", "Size.Perimeter", "Shape.EquivalentDiameter")

#: (class family, property) -> feature -> the op a rule must have to support the property.
DEFAULT_PROPERTIES: dict[tuple[str, str], dict[str, str]] = {
    ("lymphocyte", "small"): {f: "<=" for f in _SIZE},
    ("lymphocyte", "round"): {"Shape.Circularity": ">", "Shape.MinorMajorAxisRatio": ">",
                              "Shape.Eccentricity": "<="},
    ("fibroblast", "elongated"): {"Shape.Eccentricity": ">", "Shape.MinorMajorAxisRatio": "<=",
                                  "Shape.Circularity": "<="},
    ("tumor", "large"): {f: ">" for f in _SIZE},
}

#: Class names (raw, main, super) that stand for each family.
_FAMILY = {"lymphocyte": ("lymphocyte", "sTIL"),
           "fibroblast": ("fibroblast", "nonTILnonMQ_stromal", "nonTIL_stromal"),
           "tumor": ("tumor", "tumor_nonMitotic", "tumor_any")}


def check_rule_directions(rules_by_class: Mapping[str, Iterable], *,
                          properties: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> pd.DataFrame:
    """Whether each class's rules point the way the class's known morphology says.

    Checks (``properties``, default :data:`DEFAULT_PROPERTIES`): lymphocytes *small* (an upper bound ``<=`` on
    a size feature: area, major/minor axis, perimeter, equivalent diameter) and *round* (circularity or
    minor/major ratio ``>``, or eccentricity ``<=``); fibroblasts *elongated* (eccentricity ``>``, or minor/major
    ratio or circularity ``<=``); tumor *large* (a lower bound ``>`` on a size feature). A class is looked up
    under its raw, main or super name (``lymphocyte``/``sTIL``, ``fibroblast``/``nonTILnonMQ_stromal``/
    ``nonTIL_stromal``, ``tumor``/``tumor_nonMitotic``/``tumor_any``; the first one present is used).

    Status: ``pass`` = at least one rule on the property's features has the expected direction; ``fail`` =
    there are rules on those features but all point the other way; ``not tested`` = no rule uses them (or the
    class is absent). The direction is what is judged, not the threshold's value.

    Parameters
    ----------
    rules_by_class : class -> iterable of ``(feature, op, threshold)`` (a :class:`DecisionPath` works)
    """
    properties = DEFAULT_PROPERTIES if properties is None else properties
    rows = []
    for (family, prop), expected in properties.items():
        names = _FAMILY.get(family, (family,))
        cls = next((c for c in names if c in rules_by_class), None)
        rules = [Rule(*r) for r in rules_by_class[cls]] if cls is not None else []
        relevant = [r for r in rules if r.feature in expected]
        good = [r for r in relevant if r.op == expected[r.feature]]
        if not relevant:
            status = "not tested"
        else:
            status = "pass" if good else "fail"
        rows.append({"family": family, "class": cls, "property": prop, "status": status,
                     "n_supporting": len(good), "n_opposing": len(relevant) - len(good),
                     "rules": "; ".join(r.format() for r in relevant),
                     "expected": ", ".join(f"{short_name(f)} {op}" for f, op in expected.items())})
    return pd.DataFrame(rows)
