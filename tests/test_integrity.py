"""Nothing half-written, nothing stale reused (issue 13): interrupted writes, content manifests of the cohort, the
run_all.sh options that used to fail badly, notebook-level reuse, and model reuse keyed by the training data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from nucls_utils.io import atomic
from nucls_utils.io.manifest import hash_files, verify_manifest, write_manifest
from nucls_utils.phantom import cohort_problem, ensure_cohort

REPO = Path(__file__).resolve().parent.parent


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A job started in the background by a non-interactive
    shell (as CI may be) inherits SIGINT *ignored*, and then neither Python nor bash would ever see a Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(proc: subprocess.Popen) -> None:
    """Kill a test's child process if it is still running, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------------------------------------------
def test_manifest_detects_changed_missing_and_extra_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "y.txt").write_text("hello")
    m = write_manifest(tmp_path, {"key": "k1"})
    assert set(m["files"]) == {"a/x.bin", "y.txt"}
    assert verify_manifest(tmp_path, expect={"key": "k1"}) is None
    assert "key='k1'" in verify_manifest(tmp_path, expect={"key": "k2"})
    (tmp_path / "a" / "x.bin").write_bytes(b"\x00\x01\x03")
    assert "a/x.bin" in verify_manifest(tmp_path) and "changed" in verify_manifest(tmp_path)
    (tmp_path / "a" / "x.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "z.txt").write_text("new")
    assert "z.txt" in verify_manifest(tmp_path)
    assert verify_manifest(tmp_path, allow_extra=True) is None
    (tmp_path / "y.txt").unlink()
    assert "missing" in verify_manifest(tmp_path, allow_extra=True)
    assert "no readable" in verify_manifest(tmp_path / "a")


# ---------------------------------------------------------------------------------------------------------------
# hole 6: interrupted generation, and a cohort changed after it was written
# ---------------------------------------------------------------------------------------------------------------
def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "cohort"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".cohort.{pid}.abc123.tmp"
    (stale / "rgb").mkdir(parents=True)
    mine = tmp_path / f".cohort.{os.getpid()}.zzz.tmp"  # a live writer's temporary is left alone
    mine.mkdir()
    other = tmp_path / f".other.{pid}.abc.tmp"  # another target's temporary is left alone
    other.write_text("x")
    with atomic.atomic_dir(target) as tmp:
        (tmp / "f").write_text("done")
    assert (target / "f").read_text() == "done"
    assert _hidden(tmp_path) == sorted([mine.name, other.name])


def _generate_in_subprocess(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nucls_utils.phantom", "--profile", "smoke", "--seed", "0",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONHASHSEED": "0"}, preexec_fn=_default_sigint)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_cohort_generation_leaves_nothing(tmp_path, sig):
    out = tmp_path / "smoke"
    proc = _generate_in_subprocess(out)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".smoke.") for p in tmp_path.iterdir()):  # generation has started
            assert proc.poll() is None and time.monotonic() < deadline, "generation ended before the signal"
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no cohort, no orphan temporary folder


@pytest.fixture()
def cohort_copy(smoke_cohort, tmp_path) -> Path:
    root = tmp_path / "smoke"
    shutil.copytree(smoke_cohort, root)
    return root


def test_cohort_with_one_byte_changed_in_one_png_is_detected_and_regenerated(cohort_copy, capsys):
    root = cohort_copy
    assert cohort_problem(root, "smoke", 0) is None
    png = sorted((root / "rgb").glob("*.png"))[1]
    original = png.read_bytes()
    before = hash_files(root)
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    png.write_bytes(bytes(data))
    problem = cohort_problem(root, "smoke", 0)
    assert problem is not None and f"rgb/{png.name}" in problem and "changed" in problem
    _, generated = ensure_cohort(root, "smoke", 0, progress=False)
    assert generated
    assert "cannot be reused" in capsys.readouterr().out
    assert png.read_bytes() == original  # regenerated byte-identical (the generator is deterministic)
    assert hash_files(root) == before
    _, generated = ensure_cohort(root, "smoke", 0, progress=False)
    assert not generated


@pytest.mark.parametrize("damage", ["delete_png", "truncate_csv", "extra_csv", "old_manifest"])
def test_cohort_reuse_checks_every_file(cohort_copy, damage):
    root = cohort_copy
    csv = sorted((root / "csv").glob("*.csv"))[0]
    if damage == "delete_png":
        (root / "rgb" / f"{csv.stem}.png").unlink()
        want = "missing"
    elif damage == "truncate_csv":
        csv.write_bytes(csv.read_bytes()[: csv.stat().st_size // 3])
        want = "changed"
    elif damage == "extra_csv":
        shutil.copyfile(csv, root / "csv" / "TCGA-Y0-A999-DX1_id-1_left-0_top-0_bottom-9_right-9.csv")
        want = "not listed"
    else:  # a manifest written before content hashes existed
        m = json.loads((root / "manifest.json").read_text())
        m.pop("files")
        (root / "manifest.json").write_text(json.dumps(m))
        want = "no file hashes"
    assert want in cohort_problem(root, "smoke", 0)


# ---------------------------------------------------------------------------------------------------------------
# hole 7: run_all.sh options
# ---------------------------------------------------------------------------------------------------------------
def _run_all_quick(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "run_all.sh"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("opt", ["--data", "--out", "--profile", "--seed", "--only", "--metadata"])
def test_run_all_option_without_value_prints_usage(opt):
    proc = _run_all_quick(opt)
    assert proc.returncode == 2
    assert f"{opt} needs a value" in proc.stderr and "Usage: ./run_all.sh" in proc.stderr
    assert "line" not in proc.stderr.split("Usage")[0]  # no bash line number
    proc = _run_all_quick(opt, "--profile", "smoke")  # the next option is not a value
    assert proc.returncode == 2 and f"{opt} needs a value" in proc.stderr


def test_run_all_unwritable_out_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _run_all_quick("--profile", "smoke", "--out", str(blocker / "sub"))
    assert proc.returncode == 2
    assert proc.stderr.count("run_all.sh:") == 1 and "cannot be created" in proc.stderr
    assert "mkdir" not in proc.stderr and "[data]" not in proc.stdout and "[env]" not in proc.stdout
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures").write_text("a file where a folder goes")
    proc = _run_all_quick("--profile", "smoke", "--out", str(out))
    assert proc.returncode == 2 and "figures" in proc.stderr and "[data]" not in proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# notebook-level reuse (stages)
# ---------------------------------------------------------------------------------------------------------------
def test_stage_key_and_record(cohort_copy, tmp_path):
    from nucls_utils import stages

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        (nb_dir / name).write_text("{}")
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    fig = out / "figures" / "f.png"
    fig.write_bytes(b"png")
    kw = {"data_dir": cohort_copy, "profile": "smoke", "seed": 0, "metadata": "auto", "out": out}
    k1 = stages.stage_key(nb_dir / "01_a.ipynb", **kw)
    assert stages.stage_key(nb_dir / "01_a.ipynb", **kw) == k1
    assert stages.stage_key(nb_dir / "01_a.ipynb", **{**kw, "seed": 1}) != k1
    assert "not run before" in stages.stage_problem("01_a.ipynb", k1, out)
    res = out / "results" / "synthetic_smoke" / "01_a"
    res.mkdir(parents=True)
    (res / "t.csv").write_text("a\n1\n")
    k2_before = stages.stage_key(nb_dir / "02_b.ipynb", **kw)
    stages.record_stage("01_a.ipynb", k1, out, [fig], res)
    assert stages.stage_problem("01_a.ipynb", k1, out) is None
    k2 = stages.stage_key(nb_dir / "02_b.ipynb", **kw)
    assert k2 != k2_before  # an earlier notebook's results are an input
    fig.write_bytes(b"png, executed again")  # an earlier notebook ran again: same results, another figure
    stages.record_stage("01_a.ipynb", k1, out, [fig], res)
    assert stages.stage_key(nb_dir / "02_b.ipynb", **kw) == k2
    (res / "t.csv").write_text("a\n3\n")  # ... with other results: the later notebook must run again
    stages.record_stage("01_a.ipynb", k1, out, [fig], res)
    assert stages.stage_key(nb_dir / "02_b.ipynb", **kw) != k2
    fig.write_bytes(b"png")
    (res / "t.csv").write_text("a\n1\n")
    stages.record_stage("01_a.ipynb", k1, out, [fig], res)
    assert "inputs changed" in stages.stage_problem("01_a.ipynb", "other", out)
    (res / "t.csv").write_text("a\n2\n")
    assert "t.csv' changed" in stages.stage_problem("01_a.ipynb", k1, out)
    (res / "t.csv").write_text("a\n1\n")
    fig.unlink()
    assert "figures/f.png' is missing" in stages.stage_problem("01_a.ipynb", k1, out)
    fig.write_bytes(b"png")
    (cohort_copy / "csv" / sorted(os.listdir(cohort_copy / "csv"))[0]).write_text("changed")
    # the cohort's own manifest still lists the old hash; the stage key follows the manifest, and the cohort
    # check (run_all.sh runs it first) regenerates the cohort, so a changed data file never goes unnoticed
    assert cohort_problem(cohort_copy, "smoke", 0) is not None


# ---------------------------------------------------------------------------------------------------------------
# hole 10 + signals during training
# ---------------------------------------------------------------------------------------------------------------
_TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from nucls_utils.io.dataset import read_dataset
    from nucls_utils.model import data as md
    from nucls_utils.model.train import MODEL_PROFILES, TRAIN_PROFILES, train_model

    cohort, out, kill_after, pred_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    samples = md.load_fov_samples(read_dataset(cohort)[:3], progress=False)
    weights = md.fov_sampling_weights(samples)
    tc = TRAIN_PROFILES["smoke"].with_(iterations=6, checkpoint_every=2, freeze_detection_at=4)

    class Stream:
        def __init__(self, inner):
            self.inner, self.drawn = inner, 0
        def __iter__(self):
            return self
        def __next__(self):
            if kill_after and self.drawn == kill_after:
                os.kill(os.getpid(), signal.SIGTERM)  # a real SIGTERM in the middle of training
            self.drawn += 1
            return next(self.inner)
        def state_dict(self):
            return self.inner.state_dict()
        def load_state_dict(self, state):
            self.inner.load_state_dict(state)

    stream = Stream(md.TrainingStream(samples, weights, batch_size=tc.batch_size, crop=96, seed=0))
    model, hist = train_model(MODEL_PROFILES["smoke"].with_(weights=None), tc, stream, out, seed=0,
                              progress=False, device="cpu", data_fingerprint=md.samples_fingerprint(samples))
    det = model.predict(samples[0].rgb)
    np.savez(pred_out, boxes=det.boxes, scores=det.scores, probs=det.probs, drawn=stream.drawn)
""")


def _train(cohort: Path, out: Path, kill_after: int, pred: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(cohort), str(out), str(kill_after), str(pred)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})


@pytest.mark.slow
def test_sigterm_during_training_then_resume_equals_uninterrupted(smoke_cohort, tmp_path):
    full = _train(smoke_cohort, tmp_path / "full", 0, tmp_path / "full.npz")
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "killed"
    killed = _train(smoke_cohort, run, 3, tmp_path / "never.npz")
    assert killed.returncode == -signal.SIGTERM, killed.stderr[-2000:]
    assert (run / "checkpoint.pt").is_file() and not (run / "model.pt").exists()
    resumed = _train(smoke_cohort, run, 0, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert json.loads((run / "training.json").read_text())["iterations_this_run"] == 4  # resumed at update 2
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert int(b["drawn"]) == 4
    assert len(a["scores"]) > 0
    for k in ("boxes", "scores", "probs"):
        np.testing.assert_array_equal(a[k], b[k])


def test_model_is_retrained_when_its_training_data_change(tmp_path, smoke_cohort, capsys):
    import torch

    from nucls_utils.io.dataset import read_dataset
    from nucls_utils.model import data as md
    from nucls_utils.model.train import MODEL_PROFILES, TRAIN_PROFILES, train_model

    torch.set_num_threads(1)
    samples = md.load_fov_samples(read_dataset(smoke_cohort)[:2], progress=False)
    tc = TRAIN_PROFILES["smoke"].with_(iterations=1, freeze_detection_at=None)
    cfg = MODEL_PROFILES["smoke"].with_(weights=None)

    def train(smp, expect_training: bool):
        drawn = []
        inner = md.TrainingStream(smp, md.fov_sampling_weights(smp), batch_size=1, crop=96, seed=0)

        class Stream:
            def __iter__(self):
                return self

            def __next__(self):
                drawn.append(1)
                return next(inner)

            def state_dict(self):
                return inner.state_dict()

            def load_state_dict(self, s):
                inner.load_state_dict(s)

        train_model(cfg, tc, Stream(), tmp_path / "m", seed=0, progress=False, device="cpu",
                    data_fingerprint=md.samples_fingerprint(smp))
        assert bool(drawn) == expect_training

    train(samples, True)
    train(samples, False)  # nothing changed: reused
    changed = list(samples)
    s0 = changed[0]
    changed[0] = md.FovSample(s0.name, s0.hospital, s0.slide, s0.rgb, s0.boxes[1:], s0.classes[1:], s0.ismask[1:],
                              s0.masks[1:], s0.origin)
    assert md.samples_fingerprint(changed) != md.samples_fingerprint(samples)
    train(changed, True)  # one nucleus fewer in the training data: retrained
    train(changed, False)
    model_pt = tmp_path / "m" / "model.pt"
    data = bytearray(model_pt.read_bytes())
    data[-10] ^= 0xFF
    model_pt.write_bytes(bytes(data))
    capsys.readouterr()
    train(changed, True)  # a corrupted model file is never loaded: retrained, and the reason is printed
    assert "model.pt" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# a failing or interrupted notebook leaves none of its figures or tables
# ---------------------------------------------------------------------------------------------------------------
def _notebook(cells: list[str]) -> dict:
    params = ('data_dir = ""\nprofile = "smoke"\nseed = 0\nresults_dir = ""\nfigures_dir = ""\ntables_dir = ""\n'
              'core_metadata = "auto"\n')
    code = [{"cell_type": "code", "execution_count": None, "metadata": {"tags": ["parameters"]}, "outputs": [],
             "source": params}]
    code += [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": c}
             for c in cells]
    return {"cells": code, "metadata": {"kernelspec": {"name": "nucls-study", "display_name": "Python (NuCLS study)",
                                                       "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


_WRITE_TABLE = ("import pandas as pd\nfrom nucls_utils import tables\n"
                "tables.save_table(pd.DataFrame({'a': [1]}), 'partial_table', tables_dir)\n"
                "tables.save_results(pd.DataFrame({'a': [1]}), 'partial_result', results_dir)\n")


def _venv_ready() -> None:
    if not (REPO / ".venv" / "bin" / "python").exists() and not os.environ.get("NUCLS_VENV"):
        pytest.skip("the project environment (.venv) is not set up; run ./run_tests.sh")


@pytest.mark.slow
def test_failed_notebook_leaves_no_figures_or_tables(tmp_path, smoke_cohort):
    _venv_ready()
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    (nb_dir / "01_ok.ipynb").write_text(json.dumps(_notebook([_WRITE_TABLE.replace("partial", "good")])))
    (nb_dir / "02_fails.ipynb").write_text(json.dumps(_notebook([_WRITE_TABLE, "raise RuntimeError('boom')"])))
    out = tmp_path / "out"
    env = {**os.environ, "NUCLS_NOTEBOOK_DIR": str(nb_dir)}
    proc = subprocess.run([str(REPO / "run_all.sh"), "--data", str(smoke_cohort), "--profile", "smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "notebook 02_fails.ipynb FAILED" in proc.stderr and "boom" in proc.stderr
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["good_table.csv", "good_table.md"]
    assert not list((out / "figures").iterdir())
    assert (out / "supplement" / "failed" / "02_fails.ipynb").exists()
    assert not (out / ".staging").exists()
    # the finished notebook is reused on the next run; the failed one runs again
    proc = subprocess.run([str(REPO / "run_all.sh"), "--data", str(smoke_cohort), "--profile", "smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert "01_ok.ipynb: up to date" in proc.stdout and "[run] 02_fails.ipynb (not run before" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_run_all_during_a_notebook(tmp_path, smoke_cohort, sig):
    _venv_ready()
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    marker = tmp_path / "started"
    slow = f"import os, pathlib, time\npathlib.Path({str(marker)!r}).write_text(str(os.getpid()))\ntime.sleep(120)\n"
    (nb_dir / "01_slow.ipynb").write_text(json.dumps(_notebook([_WRITE_TABLE, slow])))
    out = tmp_path / "out"
    env = {**os.environ, "NUCLS_NOTEBOOK_DIR": str(nb_dir)}
    proc = subprocess.Popen([str(REPO / "run_all.sh"), "--data", str(smoke_cohort), "--profile", "smoke",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 300
        while not (marker.exists() and marker.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the notebook did not start"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        _stop(proc)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err[-2000:]
    assert "interrupted by SIG" in err
    assert not list((out / "tables").iterdir()) and not (out / ".staging").exists()
    assert not list((out / "supplement").iterdir())
    kernel = int(marker.read_text())
    deadline = time.monotonic() + 10  # the kernel notices within a second or so that papermill is gone
    while atomic._alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not atomic._alive(kernel), "the notebook's kernel outlived run_all.sh"
