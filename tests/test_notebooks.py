"""Notebooks: clean sources, literal parameters cells, no logic; notebook 01 runs end to end through run_all.sh."""

import ast
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from nucls_utils import nbtools

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_PARAMETERS = {"data_dir", "profile", "seed", "results_dir"}


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_data_prep.ipynb"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_thin(nb):
    cells = json.loads(nb.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    found = nbtools.parameters_cell(nb)
    assert found is not None, "no cell tagged 'parameters'"
    index, source = found
    assert index == next(i for i, c in enumerate(cells) if c["cell_type"] == "code"), "parameters must come first"
    assert REQUIRED_PARAMETERS <= set(nbtools.parameter_names(source))
    for c in code:
        tree = ast.parse("".join(c["source"]))
        long_defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)
                     and (n.end_lineno - n.lineno) > 5]
        assert not long_defs, "logic belongs in nucls_utils, not in notebooks"


def test_parameter_cell_rejects_code():
    with pytest.raises(ValueError, match="only assign literals"):
        nbtools.parameter_names("import os\ndata_dir = os.getcwd()")
    assert nbtools.parameter_names('data_dir = ""\nseed = 0') == ["data_dir", "seed"]


def _venv_python() -> Path:
    return Path(os.environ.get("NUCLS_VENV", REPO / ".venv")) / "bin" / "python"


def _run_all(*args: str) -> subprocess.CompletedProcess:
    """Run ./run_all.sh with ``args`` (skips the test when the project environment is absent)."""
    if not _venv_python().exists():
        pytest.skip("the project environment (.venv) is not set up; run ./run_tests.sh")
    return subprocess.run([str(REPO / "run_all.sh"), *args], capture_output=True, text=True, timeout=1500)


def test_run_all_help_and_bad_options():
    out = subprocess.run([str(REPO / "run_all.sh"), "--help"], capture_output=True, text=True, check=True)
    for opt in ("--data", "--profile", "--only", "--help"):
        assert opt in out.stdout
    bad = subprocess.run([str(REPO / "run_all.sh"), "--profile", "huge"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--profile must be smoke, cpu or paper" in bad.stderr
    bad = subprocess.run([str(REPO / "run_all.sh"), "--data", "/nonexistent/nucls"], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a directory" in bad.stderr


@pytest.mark.slow
def test_run_all_every_notebook_on_real_sample(sample_dir, metadata_path, tmp_path):
    """The real-data path end to end (issue 13, hole 12): every notebook runs on the 17 real FOVs in the smoke
    profile, or says in its output which input the real sample lacks."""
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = _run_all("--data", str(sample_dir), "--metadata", str(metadata_path), "--profile", "smoke",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - t0 < 900
    executed = sorted(p.name for p in (out / "supplement").glob("*.ipynb"))
    assert executed == sorted(p.name for p in NOTEBOOKS)
    for nb in executed:
        assert nbtools.failing_cell(out / "supplement" / nb) is None
    # notebook 01: the paper's fold N from the metadata, the sample's nuclei
    assert "01_data_prep.ipynb" in proc.stdout and "figures written:" in proc.stdout
    for name in ("figS9_instances_and_sizes", "fig1a_class_counts", "fig6c_class_by_fold"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{name}.pdf").exists()
        assert f"figures/{name}.png" in proc.stdout
    folds = pd.read_csv(out / "tables" / "table1_folds_N.csv").set_index("fold")
    assert folds["N_detection"].to_dict() == {1: 6102, 2: 15486, 3: 12672, 4: 8260, 5: 7295}
    assert folds["N_detection_without_duplicate_fovs"].to_dict() == {1: 6102, 2: 15442, 3: 12672, 4: 8260, 5: 7295}
    assert (out / "tables" / "nb01_paper_vs_run.md").read_text().count("Table 1 N, fold") == 5
    ann = pd.read_csv(out / "results" / "nucls_sample" / "01_data_prep" / "annotations.csv")
    assert len(ann) == 726
    assert (out / "supplement" / "01_data_prep.html").stat().st_size > 100_000
    # notebook 02: suggestions assessed against the sample's own annotations; no crowd simulated on real data
    s2 = pd.read_csv(out / "tables" / "tableS2_suggestion_accuracy.csv")
    assert set(s2["reference"]) == {"dataset annotations"} and {"bootstrap", "refined"} <= set(s2["suggestions"])
    assert "simulated only on the synthetic cohort" in _executed_stdout(out / "supplement" / "02_suggestions.ipynb")
    # notebooks 03-04: no multi-rater data in the sample, and they say so (and write no result but the manifest)
    for nb in ("03_agreement", "04_em_simulations"):
        assert "NO MULTI-RATER DATA" in _executed_stdout(out / "supplement" / f"{nb}.ipynb")
        assert [p.name for p in (out / "results" / "nucls_sample" / nb).iterdir()] == ["run_manifest.json"]
    # notebooks 05-07: trained and evaluated on the sample; what it lacks is named
    nb05 = _executed_stdout(out / "supplement" / "05_training.ipynb")
    assert "no uncorrected single-rater data" in nb05 and "no P-truth" in nb05
    nb06 = _executed_stdout(out / "supplement" / "06_evaluation.ipynb")
    assert "NO P-TRUTH" in nb06 and "NO UNCORRECTED DATA" in nb06 and "real data: no generator truth" in nb06
    assert (out / "tables" / "table1_corrected_singlerater.csv").exists()
    assert "no direction check" in _executed_stdout(out / "supplement" / "07_dtale.ipynb")
    assert (out / "tables" / "fig7_dtale_rules.csv").exists()
    # notebook 08: the baselines trained on the sample's folds; no transfer test (the data are real already)
    assert "the run's data are real already" in _executed_stdout(out / "supplement" / "08_baselines.ipynb")
    ladder = pd.read_csv(out / "tables" / "nb08_supervision_ladder.csv")
    assert set(ladder["truth"]) == {"corrected"} and "NuCLS" in set(ladder["system"]) and len(ladder) == 7
    # notebook 09: the model trained on the sample, on the synthetic slide (the only slide with a truth), and it says so
    assert "the slide is still the synthetic one" in _executed_stdout(out / "supplement" / "09_whole_slide.ipynb")
    assert (out / "tables" / "nb09_detection_vs_truth.csv").exists()
    # stripping an executed copy gives back a clean notebook with the same cells as the source
    executed01 = out / "supplement" / "01_data_prep.ipynb"
    assert nbtools.strip_outputs(executed01)
    src = json.loads((REPO / "notebooks" / "01_data_prep.ipynb").read_text())
    got = json.loads(executed01.read_text())
    assert [c["source"] for c in got["cells"]] == [c["source"] for c in src["cells"]]
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in got["cells"] if c["cell_type"] == "code")


@pytest.mark.slow
def test_run_all_names_the_failing_notebook_and_cell(sample_dir, tmp_path):
    broken = tmp_path / "broken"
    (broken / "csv").mkdir(parents=True)
    (broken / "rgb").mkdir()
    csv = sorted((sample_dir / "csv").glob("*.csv"))[0]
    (broken / "csv" / csv.name).write_text(csv.read_text().replace("lymphocyte", "lymphocite", 1))
    (broken / "rgb" / f"{csv.stem}.png").write_bytes((sample_dir / "rgb" / f"{csv.stem}.png").read_bytes())
    out = tmp_path / "out"
    proc = _run_all("--data", str(broken), "--only", "01", "--out", str(out))
    assert proc.returncode == 1
    assert "notebook 01_data_prep.ipynb FAILED" in proc.stderr
    assert "failing cell: #" in proc.stderr
    assert "unknown raw class 'lymphocite'" in proc.stderr
    assert "summary" not in proc.stdout


@pytest.mark.slow
def test_run_all_smoke_profile_runs_every_notebook(tmp_path):
    """`./run_all.sh --profile smoke` end to end: notebook 02 writes the study that notebooks 03-07 read; a re-run
    reuses every notebook; a second run from scratch with the same seed writes byte-identical tables."""
    out = tmp_path / "out"
    proc = _run_all("--profile", "smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    executed = sorted(p.name for p in (out / "supplement").glob("*.ipynb"))
    assert executed == sorted(p.name for p in NOTEBOOKS) and len(executed) >= 4
    # without --data the run uses the synthetic cohort (notebook 01: its figures, the comparison with the real core
    # set, a seeded 3-fold split of its 3 hospitals, boxes and traced outlines in about the core set's proportions)
    assert "synthetic cohort (smoke, seed 0)" in proc.stdout
    for name in ("nb01_example_fovs", "nb01_ground_truth_overlay", "nb01_stain_densities", "figS9_instances_and_sizes"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    calib = pd.read_csv(out / "tables" / "nb01_calibration_vs_real.csv")
    assert set(calib["quantity"]) >= {"class share, %", "median box width, px", "nuclei per FOV, mean"}
    folds = pd.read_csv(out / "tables" / "table1_folds_N_dataset.csv")
    assert folds["fold"].tolist() == [1, 2, 3]
    ann = pd.read_csv(out / "results" / "synthetic_smoke" / "01_data_prep" / "annotations.csv")
    assert set(ann["type"]) == {"rectangle", "polyline"} and 0.2 < (ann["type"] == "polyline").mean() < 0.45
    s2 = pd.read_csv(out / "tables" / "tableS2_suggestion_accuracy.csv")
    assert set(s2["suggestions"]) == {"bootstrap", "refined", "refined, region class"}
    assert set(s2["reference"]) == {"corrected single-rater", "exact truth"}
    boot = s2[(s2["suggestions"] == "bootstrap") & (s2["reference"] == "exact truth")].iloc[0]
    assert 30 < boot["F1"] <= 100
    study = out / "results" / "synthetic_smoke" / "02_suggestions" / "study"
    assert len(list((study / "singlerater" / "corrected" / "csv").glob("*.csv"))) == 10
    assert {p.name for p in (study / "multirater").iterdir() if p.is_dir()} == {"U-control", "B-control", "E"}
    for name in ("figS2_suggestion_examples", "figS4_suggestion_accuracy_per_fov", "figS2_refinement_training",
                 "fig2_clustering_example", "fig3e_np_redundancy"):
        assert (out / "figures" / f"{name}.png").exists()
    # notebooks 03 and 04 on the study notebook 02 wrote: every figure, the truth they infer, the paper's numbers
    for name in ("fig3a_detection_accuracy", "fig3b_np_label_roc", "fig3c_pathologist_confusion", "fig3d_mds_kappa",
                 "fig4b_clicked_suggestions", "fig4c_boundary_accuracy", "fig4d_self_agreement",
                 "fig4e_accuracy_by_set", "fig5a_anchors_vs_threshold", "fig5b_constraint_effect",
                 "fig5c_alpha_by_threshold", "fig5d_pairwise_kappa", "figS3_super_class_accuracy",
                 "figS5_clicked_boundaries", "figS7_confusion", "figS8_ease_of_detection", "figS16_clustering_algorithm",
                 "nb03_truth_vs_generator"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000, name
        assert (out / "figures" / f"{name}.pdf").exists(), name
    stage = out / "results" / "synthetic_smoke" / "03_agreement"
    assert {"truth_E.csv", "truth_U-control.csv", "labels_E.csv", "truth_tables.json"} <= {p.name for p in
                                                                                         stage.iterdir()}
    pvr = pd.read_csv(out / "tables" / "nb03_paper_vs_run.csv").set_index("quantity")
    assert 0 < float(pvr.at["alpha x 100, Ps, main classes, IOU 0.25", "this_run"]) <= 100
    assert 0.5 < float(pvr.at["NP-label AUROC, micro (E, main classes)", "this_run"]) <= 1
    # other rosters on the study's own FOVs, read back from what notebook 02 wrote
    spread = pd.read_csv(out / "tables" / "nb03_roster_spread.csv").set_index("statistic")
    assert spread.at["fig3b.np_auroc_micro", "rosters"] == 2 and 0.5 < spread.at["fig3b.np_auroc_micro", "mean"] <= 1
    fig3e = pd.read_csv(out / "tables" / "fig3e_np_redundancy.csv")
    assert set(fig3e["k"]) == set(range(2, 16)) and {"mcc_pooled_ovr", "auroc_micro", "det_f1"} <= set(fig3e["metric"])
    assert "EM inferences in" in _executed_stdout(out / "supplement" / "04_em_simulations.ipynb")
    # 05 trains every experiment of the plan on each hospital fold; 06 evaluates the stored predictions; 07 DTALE
    runs = pd.read_csv(out / "results" / "synthetic_smoke" / "05_training" / "training_runs.csv")
    assert {"config3_fold1", "config1_fold1", "config2_fold1", "config4_fold1", "config6_fold1", "sf1_fold1",
            "uncorrected_config3_fold1"} <= set(runs["name"])
    t1 = pd.read_csv(out / "tables" / "table1_corrected_singlerater.csv")
    assert t1["fold"].iloc[0] == "1 (val)" and t1["fold"].iloc[-1].startswith("Mean (SD)")
    for name in ("table1_ptruth_E", "tableS3_scale_factor", "tableS5_ablations", "tableS6_uncorrected_training",
                 "nb06_vs_generator_truth", "nb06_truth_ceiling", "fig7_dtale_rules", "nb07_paper_vs_run"):
        assert (out / "tables" / f"{name}.csv").exists(), name
    for name in ("figS11_confusion_super", "fig6d_predictions", "fig7bg_embedding", "fig7ef_figS15_tree_overlay",
                 "nb08_supervision_ladder", "nb08_cyclic_cycles"):
        assert (out / "figures" / f"{name}.png").exists(), name
    # 08: every system on the synthetic fold, against both truths, and transferred to the real sample
    ladder = pd.read_csv(out / "tables" / "nb08_supervision_ladder.csv")
    assert set(ladder["truth"]) == {"corrected", "generator", "real sample"} and len(ladder) == 21
    assert ((ladder["AP@.5"] >= 0) & (ladder["AP@.5"] <= 100)).all()
    cycles = pd.read_csv(out / "tables" / "nb08_cyclic_cycles.csv")
    assert sorted(cycles["cycle"].unique()) == [1, 2] and (cycles["pseudo_nuclei"] > 0).all()
    # 09: notebook 05's model on the synthetic slide, as the CLI runs it, scored against the slide's truth
    pred = out / "results" / "synthetic_smoke" / "09_whole_slide" / "slide_prediction"
    assert {"nuclei.parquet", "nuclei.geojson", "annotations_dsa.json", "summary.json", "heatmap.png"} <= {
        p.name for p in pred.iterdir()}
    scores = pd.read_csv(out / "tables" / "nb09_detection_vs_truth.csv").set_index("metric")["value"]
    assert 0 <= scores["ap50"] <= 1 and scores["det_n"] > 100
    slide_summary = json.loads((pred / "summary.json").read_text())
    assert slide_summary["nuclei"] == len(pd.read_parquet(pred / "nuclei.parquet"))
    # every paper-vs-run table's paper column is the paper module's (issue 15)
    from test_paper import check_paper_columns

    assert {p.name for p in (out / "tables").glob("*paper_vs_run*.csv")} >= {
        f"{n}_paper_vs_run.csv" for n in ("nb01", "nb02", "nb03", "nb04", "nb07")} | {"nb06_paper_vs_run_table1.csv"}
    assert check_paper_columns(out / "tables") > 60
    # every figure and table the run wrote is registered (issue 17), the supplement's page lists them, and no
    # executed notebook shows this machine's paths
    from nucls_utils import figures

    written = {(p.stem, "figure") for p in (out / "figures").glob("*.png")} | {
        (p.stem, "table") for p in (out / "tables").glob("*.csv")}
    registered = {(a.name, a.kind) for a in figures.REGISTRY}
    assert written <= registered, sorted(written - registered)
    assert {(a.name, a.kind) for a in figures.REGISTRY if not a.optional} <= written
    index = (out / "supplement" / "index.html").read_text(encoding="utf-8")
    assert "Not in the registry" not in index and index.count("<figure id=") == len(list((out / "figures").glob("*.png")))
    for nb in (out / "supplement").glob("*.ipynb"):  # a drawn figure is shown once, not again as a cell's value
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            draws = "".join(cell["source"]).count("figures.draw(")
            images = sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            assert not draws or images <= draws, (nb.name, "".join(cell["source"])[:200])
    for page in (out / "supplement").glob("*"):
        if page.suffix in (".ipynb", ".html"):
            text = page.read_text(encoding="utf-8")
            assert str(REPO) not in text and str(out) not in text, page.name
            assert "TqdmWarning" not in text, page.name

    # every figure can be drawn again from the inputs its notebook stored, without running it: the same picture
    # (one figure of each notebook here, to keep the suite short; every figure's inputs are stored the same way)
    remade = tmp_path / "remade"
    written_figs = {p.stem for p in (out / "figures").glob("*.png")}
    one_each = sorted({a.notebook: a.name for a in reversed(figures.REGISTRY)
                       if a.kind == "figure" and a.name in written_figs}.values())
    assert len(one_each) == len(NOTEBOOKS)
    proc_make = subprocess.run([str(_venv_python()), "-m", "nucls_utils.figures", "make", *one_each, "--out",
                                str(out), "--figures-dir", str(remade)], capture_output=True, text=True, timeout=600,
                               cwd=REPO)
    assert proc_make.returncode == 0, proc_make.stderr[-3000:]
    import matplotlib.pyplot as plt
    import numpy as np

    drawn = sorted(f"{n}.png" for n in one_each)
    assert sorted(p.name for p in remade.glob("*.png")) == drawn
    for name in drawn:
        assert np.array_equal(plt.imread(out / "figures" / name), plt.imread(remade / name)), name
        pdf = name.removesuffix(".png") + ".pdf"
        assert (out / "figures" / pdf).read_bytes() == (remade / pdf).read_bytes(), pdf

    # a re-run with nothing changed executes nothing and rewrites nothing
    tables_before = {p.name: p.read_bytes() for p in (out / "tables").iterdir()}
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "tables").iterdir()}
    t0 = time.monotonic()
    again = _run_all("--profile", "smoke", "--out", str(out))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count(": up to date") == len(NOTEBOOKS), again.stdout[-3000:]
    assert time.monotonic() - t0 < 120
    assert {p: p.stat().st_mtime_ns for p in (out / "tables").iterdir()} == mtimes

    # the same seed in a fresh output folder, another process hash seed: byte-identical tables. The trained models
    # are copied over (and verified by their manifests before reuse) to keep the suite short: that training is
    # reproducible across processes is test_integrity's SIGTERM/resume test; so are notebook 09's predicted tiles
    # (a tile is a function of the slide and the model: test_wsi's Dask and kill-and-resume tests), from which the
    # notebook resumes; everything else runs again.
    out2 = tmp_path / "out2"
    for models in (Path("results") / "synthetic_smoke" / "05_training" / "models",
                   *(p.relative_to(out) for p in (out / "results" / "synthetic_smoke" / "08_baselines").glob("cyclic_fold*")),
                   Path("results") / "synthetic_smoke" / "09_whole_slide" / "slide_prediction"):
        shutil.copytree(out / models, out2 / models)  # the slide's tiles and run key: notebook 09 resumes from them
    proc2 = subprocess.run([str(REPO / "run_all.sh"), "--profile", "smoke", "--out", str(out2)], capture_output=True,
                           text=True, timeout=1500, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert proc2.returncode == 0, proc2.stdout[-3000:] + proc2.stderr[-3000:]
    assert "up to date, reused" in proc2.stdout  # the cached cohort
    tables_after = {p.name: p.read_bytes() for p in (out2 / "tables").iterdir()}
    assert tables_after.keys() == tables_before.keys()
    differ = sorted(k for k in tables_before if tables_before[k] != tables_after[k])
    # a table with a wall-clock column (the baselines' training time) is equal in every other column, exactly
    from nucls_utils.tables import TIMING_COLUMNS, compare_tables

    timed = {k.removesuffix(".csv") for k in tables_before if k.endswith(".csv")
             and set(pd.read_csv(out / "tables" / k).columns) & set(TIMING_COLUMNS)}
    for k in [k for k in differ if k.rsplit(".", 1)[0] in timed]:
        if k.endswith(".csv"):
            a, b = (pd.read_csv(o / "tables" / k) for o in (out, out2))
            a, b = (t.drop(columns=[c for c in TIMING_COLUMNS if c in t.columns]) for t in (a, b))
            assert not compare_tables(a, b, 0.0), k
        differ.remove(k)
    assert not differ, differ


def _executed_stdout(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
