"""The paper-values module: every number typed once, each findable in the paper's text, and every paper column of
the model tables read from it (the notebooks' paper-vs-run tables are checked in test_notebooks' smoke run)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nucls_utils import paper
from nucls_utils.model import report as rp

REPO = Path(__file__).resolve().parents[1]
PAPER_TEXT = sorted((REPO.parent / "shared" / "reference" / "seeds").glob("001_*.txt"))


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _spellings(v) -> list[str]:
    if isinstance(v, str):
        return [_squash(v)]
    if isinstance(v, int):
        return [str(v), f"{v:,}"]
    return [f"{v:g}", f"{v:.1f}", f"{v:.2f}"]


def _source_text(key: str) -> str:
    """The squashed text a number is quoted from: the paper (seed 001), or for ``seedNNN.*`` keys that seed's text."""
    m = re.match(r"seed(\d{3})\.", key)
    found = sorted(PAPER_TEXT[0].parent.glob(f"{m.group(1)}_*.txt")) if m else PAPER_TEXT
    assert found, f"{key}: no source text"
    return _squash(found[0].read_text(errors="replace"))


@pytest.mark.skipif(not PAPER_TEXT, reason="the paper's text is not in ../shared/reference/seeds")
def test_every_quoted_number_is_printed_in_the_paper():
    quoted = [n for n in paper.NUMBERS.values() if n.quoted]
    assert len(quoted) > 100
    missing = [(n.key, v) for n in quoted for v in (n.value, n.sd) if v is not None
               and not any(s in _source_text(n.key) for s in _spellings(v))]
    assert not missing, missing
    # a number read from the paper's words says how in its query
    for n in paper.NUMBERS.values():
        assert n.source and len(n.query) > 20, n.key
        if not n.quoted:
            assert "'" in n.query, n.key  # quotes the words it was read from


def test_lookup_and_rows():
    assert paper.lookup("fig4d.self_kappa_ps") == paper.value("fig4d.self_kappa_ps")
    assert paper.lookup("fig4d.self_kappa_ps:sd") == paper.sd("fig4d.self_kappa_ps")
    with pytest.raises(KeyError, match="gives no SD"):
        paper.lookup("fig3a.np_detection_ap:sd")
    with pytest.raises(KeyError, match="only ':sd'"):
        paper.lookup("fig3a.np_detection_ap:mean")
    with pytest.raises(KeyError, match=r"no paper number 'tableS2.refined_f2' \(keys under 'tableS2': "):
        paper.value("tableS2.refined_f2")
    r = paper.row("tableS2.refined_f1", "refined detection F1", 40.0)
    assert r["paper"] == paper.value("tableS2.refined_f1") and r["source"] == "Table S2"
    assert r["paper_key"] == "tableS2.refined_f1"
    t = paper.table()
    assert t["key"].is_unique and len(t) == len(paper.NUMBERS)


def test_a_key_defined_twice_is_rejected():
    n = paper.NUMBERS["tableS2.refined_f1"]
    with pytest.raises(ValueError, match="defined twice"):
        paper._index([n, n])
    with pytest.raises(ValueError, match="may not contain ':'"):
        paper._index([paper.PaperNumber("a:b", 1, "x", "y")])


def test_views_agree_with_the_numbers():
    t1 = paper.table1_metrics("corrected")
    assert list(t1) == list(paper.TABLE1_METRICS)
    assert t1["super_mcc"] == (paper.value("table1.corrected.super_mcc"), paper.sd("table1.corrected.super_mcc"))
    with pytest.raises(ValueError, match="truth must be one of"):
        paper.table1_metrics("uncorrected")
    assert sum(paper.table1_n().values()) == sum(paper.value(f"table1.n.fold{k}") for k in range(1, 6))
    s5 = paper.table_s5()
    assert set(s5) == {"1", "2", "3", "4", "6"} and "main_mcc" not in s5["6"]
    assert s5["3"]["super_mcc"] == paper.value("tableS5.config3.super_mcc")


def _model_rows():
    """Evaluation rows in the shape of report.evaluate_plan: config 1-4 and 6 on fold 1, config 3 and its
    uncorrected twin on folds 1-3, two scale factors."""
    rng = np.random.default_rng(0)
    rows = []
    metrics = {k: None for k in rp.TABLE1_COLUMNS}

    def add(name, fold, config, tables, training_data="corrected", level="main", sf=1.0, truth="corrected"):
        vals = {k: (int(rng.integers(50, 500)) if k.endswith("_n") else float(rng.uniform(0.3, 0.9))) for k in metrics}
        rows.append({"experiment": name, "truth": truth, "fold": fold, "config": config, "tables": tables,
                     "training_data": training_data, "level": level, "scale_factor": sf, "n_fovs": 3, **vals})

    for f in (1, 2, 3):
        main = "Table 1; Table S5; Table S3" if f == 1 else "Table 1"
        add(f"config3_fold{f}", f, "3", main)
        add(f"config3_fold{f}", f, "3", main, truth="ptruth")
        add(f"uncorrected_config3_fold{f}", f, "3", "Table S6", training_data="uncorrected")
    for c in ("1", "2", "4"):
        add(f"config{c}_fold1", 1, c, "Table S5")
    add("config6_fold1", 1, "6", "Table S5", level="super")
    add("sf4_fold1", 1, "3", "Table S3", sf=4.0)
    return pd.DataFrame(rows)


def test_model_tables_read_the_paper_module():
    rows = _model_rows()
    for truth, which in (("corrected", "corrected"), ("ptruth", "ptruth")):
        pvr = rp.paper_vs_run(rows, truth)
        assert len(pvr) == len(paper.TABLE1_METRICS)
        for _, r in pvr.iterrows():
            assert r["paper mean"] == paper.lookup(r["paper_key"])
            assert r["paper SD"] == paper.lookup(r["paper_key"] + ":sd")
            assert r["paper_key"].startswith(f"table1.{which}.")
    s5 = rp.table_s5(rows).set_index("config")
    heads = ("AP@.5", "MCC main", "MCC super", "µAUROC main", "µAUROC super", "MAUROC main", "MAUROC super")
    for config, r in s5.iterrows():
        for head, k in zip(heads, paper.TABLE_S5_METRICS, strict=True):
            key = f"tableS5.config{config}.{k}"
            expected = paper.value(key) if key in paper.NUMBERS else None
            got = r[f"{head} (paper)"]
            assert (got is None or pd.isna(got)) if expected is None else got == expected, (config, head)
    s6 = rp.table_s6(rows).set_index("metric")
    for k, head in rp.TABLE1_COLUMNS.items():
        if head in s6.index:
            assert s6.at[head, "paper, uncorrected (mean)"] == paper.value(f"tableS6.{k}")
    s3 = rp.table_s3(rows, stride=16).set_index("scale factor")
    assert s3.at[4.0, "AP@.5 (paper, R18)"] == paper.value("tableS3.sf4.ap50")
    assert s3.at[1.0, "AP@.5 (paper, R18)"] == paper.value("tableS3.sf1.ap50")


def _distinctive_paper_values() -> set[float]:
    """Paper numbers with a fractional part and at least three significant digits (31.7, 0.745, ...): such a literal
    anywhere in the code is a paper number typed a second time."""
    out = set()
    for n in paper.NUMBERS.values():
        for v in (n.value, n.sd):
            if isinstance(v, float) and v != int(v) and len(f"{v:g}".replace(".", "").lstrip("0")) >= 3:
                out.add(v)
    return out


def _numeric_constants(source: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            yield node.lineno, float(node.value)


def test_no_paper_number_is_typed_outside_the_module():
    values = _distinctive_paper_values()
    assert len(values) > 50
    found = []
    for path in sorted((REPO / "nucls_utils").rglob("*.py")):
        if path.name == "paper.py":
            continue
        found += [(str(path.relative_to(REPO)), line, v) for line, v in _numeric_constants(path.read_text())
                  if v in values]
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found += [(f"{path.name} cell {i}", line, v) for line, v in _numeric_constants("".join(cell["source"]))
                          if v in values]
    assert not found, found


def test_the_check_above_can_fail(tmp_path):
    values = _distinctive_paper_values()
    hits = [v for _, v in _numeric_constants("x = {'f1': 47.9, 'other': 0.5}") if v in values]
    assert hits == [47.9]


def check_paper_columns(tables_dir: Path) -> int:
    """Every ``*paper_vs_run*.csv`` in ``tables_dir``: each row with a ``paper_key`` shows the module's value in its
    paper column (``paper``, or ``paper mean`` / ``paper SD``). Returns the number of rows checked."""
    checked = 0
    for path in sorted(tables_dir.glob("*paper_vs_run*.csv")):
        t = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert "paper_key" in t.columns, f"{path.name} has no paper_key column"
        for _, r in t[t["paper_key"] != ""].iterrows():
            key = r["paper_key"]
            cols = [("paper mean", key), ("paper SD", key + ":sd")] if "paper mean" in t.columns else [("paper", key)]
            for col, ref in cols:
                expected = paper.lookup(ref)
                got = r[col]
                if isinstance(expected, str):
                    assert got == expected, (path.name, key, got)
                else:
                    assert float(got) == pytest.approx(float(expected), rel=1e-9), (path.name, key, got)
                checked += 1
    return checked


def test_suggestion_and_dtale_tables_read_the_paper_module(tmp_path):
    from nucls_utils import dtale, suggestions

    s2 = pd.DataFrame({"reference": ["corrected", "corrected", "corrected", "exact"],
                       "suggestions": ["bootstrap", "refined", "refined, region class", "bootstrap"],
                       "F1": [35.0, 44.44, 44.44, 99.0], "MCC": [70.0, 40.0, 60.0, 99.0],
                       "recall_sTIL": [80.0, np.nan, 75.0, 99.0]})
    t = suggestions.paper_vs_run(s2, singlerater_types=pd.Series(["polyline", "rectangle", "rectangle", "rectangle"]))
    by = t.set_index("paper_key")
    assert by.at["tableS2.bootstrap_f1", "this_run"] == 35.0  # the first reference, not "exact"
    assert by.at["tableS2.refined_f1", "this_run"] == 44.4
    assert by.at["dataset.clicked_share_singlerater", "this_run"] == 25.0
    assert "fig4b.clicked_e" not in by.index  # notebook 03's number (anchors), not notebook 02's
    assert by.at["tableS2.refined_model_stil_recall", "note"] == "not defined on this run"
    rules = {"super": pd.DataFrame({"class": ["tumor_any", "sTIL"], "disc. precision": [0.95, 0.9],
                                    "rep. F1": [0.8, 0.7], "representative rule": ["a", "b"]}),
             "main": pd.DataFrame({"class": ["lymphocyte"], "disc. precision": [0.9], "rep. F1": [0.61],
                                   "representative rule": ["Size.MajorAxisLength <= 7 µm"]})}
    d = dtale.paper_vs_run(rules, max_depth=7, min_samples_leaf=12, n_explained=2400,
                           notes={"nonTIL_stromal": "not measured"})
    for k, frame in enumerate((t, d)):
        frame.to_csv(tmp_path / f"x{k}_paper_vs_run.csv", index=False)
    assert check_paper_columns(tmp_path) == len(t) + len(d) - 1  # the last DTALE row has no paper number
    dd = d.set_index("quantity")
    assert dd.at["discriminative precision, stroma", "this_run"] == ""
    assert dd.at["discriminative precision, stroma", "note"] == "not measured"
    assert dd.at["tree min_samples_leaf", "note"] == "scaled to the number of nuclei explained here"
    assert dtale.tree_settings("paper", 100) == (paper.value("fig7.tree_max_depth"),
                                                 paper.value("fig7.tree_min_samples_leaf"))
    assert dtale.tree_settings("cpu", 2400) == (paper.value("fig7.tree_max_depth"), 12)
    assert dtale.tree_settings("cpu", 2400, 3, 40) == (3, 40)
    # a tampered paper column is caught
    bad = t.copy()
    bad.loc[0, "paper"] = 99.9
    bad.to_csv(tmp_path / "x0_paper_vs_run.csv", index=False)
    with pytest.raises(AssertionError):
        check_paper_columns(tmp_path)
