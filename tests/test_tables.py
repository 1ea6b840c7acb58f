"""Comparing two runs' tables (the refactors' "behaviour unchanged" check): planted differences are found,
wall-clock columns are ignored, and a table missing from one run is named."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nucls_utils.tables import _main, compare_outputs, compare_tables, save_results, save_table


def _run(root, ap=0.7, seconds=1.0, extra=False):
    t = pd.DataFrame({"experiment": ["config3_fold1", "config2_fold1"], "ap50": [ap, 0.5], "note": ["", np.nan]})
    save_table(t, "table1_corrected_singlerater", root / "tables")
    save_results(pd.DataFrame({"update": [1, 2], "loss": [2.0, 1.5], "seconds": [seconds, 2 * seconds]}),
                 "history", root / "results" / "05_training")
    if extra:
        save_results(pd.DataFrame({"x": [1]}), "only_here", root / "results")


def test_equal_runs_and_timing_columns(tmp_path):
    for name, sec in (("a", 1.0), ("b", 3.0)):
        (tmp_path / name / "results" / "05_training").mkdir(parents=True)
        (tmp_path / name / "tables").mkdir()
        _run(tmp_path / name, seconds=sec)
    assert compare_outputs(tmp_path / "a", tmp_path / "b") == []
    assert len(compare_outputs(tmp_path / "a", tmp_path / "b", ignore_columns=())) == 1
    assert _main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0


def test_planted_differences_are_named(tmp_path):
    for name, ap, extra in (("a", 0.7, False), ("b", 0.7 + 1e-6, True)):
        (tmp_path / name / "results" / "05_training").mkdir(parents=True)
        (tmp_path / name / "tables").mkdir()
        _run(tmp_path / name, ap=ap, extra=extra)
    diffs = compare_outputs(tmp_path / "a", tmp_path / "b")
    assert any(d.startswith("tables/table1_corrected_singlerater.csv: column 'ap50': 1 of 2 rows") for d in diffs)
    assert any(d.startswith("results/only_here.csv: only in") for d in diffs)
    assert len(diffs) == 2
    assert compare_outputs(tmp_path / "a", tmp_path / "b", tol=1e-5) == [d for d in diffs if d.startswith("results/")]
    assert _main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1


def test_compare_tables_columns_rows_text():
    a = pd.DataFrame({"x": [1.0, np.nan], "s": ["u", "v"]})
    assert compare_tables(a, a.copy()) == []
    assert compare_tables(a, a[["s", "x"]]) == ["columns differ: same names, other order"]
    assert compare_tables(a, a.iloc[:1]) == ["2 rows vs 1"]
    assert compare_tables(a, a.assign(s=["u", "w"]))[0].startswith("column 's': 1 of 2 rows differ")
    assert compare_tables(a, a.assign(x=[1.0, 0.0]))[0].startswith("column 'x': 1 of 2 rows differ")
