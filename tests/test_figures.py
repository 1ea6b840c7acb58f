"""The figure and table registry, the browsable supplement (checked in a real headless browser where Chromium is
installed), machine paths removed from executed notebooks, and JupyterLab started headless with the project's
kernel."""

from __future__ import annotations

import html.parser
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nucls_utils import figures, nbtools

ROOT = Path(__file__).resolve().parents[1]


def _readme_names() -> dict[str, set[str]]:
    """Per notebook, the names the README's notebook table lists (figures and tables)."""
    out = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `(0\d_[a-z_]+)` \| .* \| (.*) \|$", line)
        if m:
            out[m.group(1)] = {n for n in re.findall(r"`([^`]+)`", m.group(2)) if "/" not in n and "<" not in n}
    return out


def test_every_readme_figure_and_table_has_a_registry_entry_and_vice_versa():
    listed = _readme_names()
    assert set(listed) == {a.notebook for a in figures.REGISTRY}
    for nb, names in listed.items():
        assert names == {a.name for a in figures.REGISTRY if a.notebook == nb}, nb


def test_every_named_builder_is_a_function_of_the_package():
    for a in figures.REGISTRY:
        assert a.kind in ("figure", "table") and a.caption
        module, name = a.builder.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name, None)), a.builder
    assert len({(a.name, a.kind) for a in figures.REGISTRY}) == len(figures.REGISTRY)
    with pytest.raises(KeyError, match="both a figure and a table"):
        figures.artifact("fig3e_np_redundancy")
    assert figures.artifact("fig3e_np_redundancy", "figure").notebook == "04_em_simulations"


def test_saved_figures_carry_builder_notebook_and_commit(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from nucls_utils.config import git_commit
    from nucls_utils.figures import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    png, pdf = save_figure(fig, "fig3b_np_label_roc", tmp_path)
    plt.close(fig)
    text = Image.open(png).text
    assert "nucls_utils.plots.agreement.plot_np_label_roc" in text["Description"]
    assert "notebook 03_agreement" in text["Description"]
    assert text["Source"] == f"commit {git_commit()}"
    raw = pdf.read_bytes()
    assert b"plot_np_label_roc" in raw and b"CreationDate" not in raw


def _history():
    import numpy as np
    import pandas as pd

    it = np.arange(1, 61)
    return pd.DataFrame({"iteration": it, "loss": 2.0 / np.sqrt(it), "loss_box": 1.0 / np.sqrt(it)})


def test_draw_stores_the_inputs_and_make_redraws_the_same_figure(tmp_path):
    """``figures.draw`` in a notebook, then ``figures make`` from the stored inputs alone: the same picture."""
    from types import SimpleNamespace

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from nucls_utils.io.bundle import bundle_meta, load_bundle
    from nucls_utils.plots import set_style

    set_style()
    stage = tmp_path / "results" / "synthetic_smoke" / "02_suggestions"
    ctx = SimpleNamespace(stage_dir=stage, figures_dir=tmp_path / "figures")
    assert figures.draw("figS2_refinement_training", ctx, _history(), title="a title") is None  # shown once
    assert plt.gcf().axes[0].get_title() == "a title"
    plt.close("all")
    stored = figures.inputs_dir(stage, "figS2_refinement_training")
    assert bundle_meta(stored)["builder"] == "nucls_utils.plots.suggestions.plot_training_loss"
    args = load_bundle(stored)
    assert set(args) == {"history", "title"} and args["title"] == "a title" and len(args["history"]) == 60

    png, pdf = figures.make("figS2_refinement_training", tmp_path, figures_dir=tmp_path / "again")
    first, again = plt.imread(tmp_path / "figures" / png.name), plt.imread(png)
    assert first.shape == again.shape and np.array_equal(first, again)
    assert pdf.read_bytes() == (tmp_path / "figures" / pdf.name).read_bytes()

    # the command line: the same, into the run's figures folder, and --all finds every stored figure
    (tmp_path / "figures" / png.name).unlink()
    assert figures._main(["make", "--all", "--out", str(tmp_path)]) == 0
    assert np.array_equal(plt.imread(tmp_path / "figures" / png.name), first)


def test_draw_and_make_reject_what_does_not_fit(tmp_path, capsys):
    from types import SimpleNamespace

    ctx = SimpleNamespace(stage_dir=tmp_path / "results" / "d" / "02_suggestions", figures_dir=tmp_path / "figures")
    with pytest.raises(TypeError, match="figS2_refinement_training.*plot_training_loss"):
        figures.draw("figS2_refinement_training", ctx, _history(), no_such_argument=1)
    assert not (tmp_path / "figures").exists() and not ctx.stage_dir.exists()
    with pytest.raises(KeyError, match="no figure or table called"):
        figures.draw("fig99_nothing", ctx)
    with pytest.raises(FileNotFoundError, match="run notebook 03_agreement first"):
        figures.make("fig3d_mds_kappa", tmp_path)
    assert figures._main(["make", "fig3d_mds_kappa", "--out", str(tmp_path)]) == 1
    assert "no stored inputs" in capsys.readouterr().err
    import matplotlib.pyplot as plt

    for ds in ("a", "b"):
        figures.draw("figS2_refinement_training", SimpleNamespace(stage_dir=tmp_path / "results" / ds / "02_suggestions",
                                                                  figures_dir=tmp_path / "figures"), _history())
        plt.close("all")
    with pytest.raises(ValueError, match="several datasets"):
        figures.make("figS2_refinement_training", tmp_path)
    assert figures.make("figS2_refinement_training", tmp_path, dataset="b")[0].is_file()


def test_every_figure_builder_returns_a_figure_it_draws_itself():
    """A registered figure builder takes no axes to draw into: what ``make`` calls must make the whole figure."""
    import inspect

    for a in figures.REGISTRY:
        if a.kind == "figure":
            params = inspect.signature(figures.builder_of(a.name)).parameters
            assert all(params[p].default is None for p in ("ax", "axes") if p in params), a.builder


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.links.append(value)


def _fake_run(out: Path) -> None:
    """A run's output folder: two registered figures, one unregistered, two tables, two executed notebooks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nucls_utils.figures import save_figure

    for sub in ("figures", "tables", "supplement"):
        (out / sub).mkdir(parents=True)
    for name in ("fig3b_np_label_roc", "fig1a_class_counts", "scratch_plot"):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        save_figure(fig, name, out / "figures")
        plt.close(fig)
    for name in ("table1_corrected_singlerater", "nb03_paper_vs_run"):
        (out / "tables" / f"{name}.csv").write_text("a,b\n1,2\n")
        (out / "tables" / f"{name}.md").write_text("| a | b |\n")
    for nb in ("01_data_prep", "03_agreement"):
        (out / "supplement" / f"{nb}.html").write_text("<html><body>executed</body></html>")
        (out / "supplement" / f"{nb}.ipynb").write_text("{}")
    (out / "supplement" / "run_summary.json").write_text(json.dumps(
        {"profile": "smoke", "seed": 0, "data": "synthetic_smoke", "commit": "abc123", "total_seconds": 9,
         "notebooks": {"pretraining": "3", "01_data_prep": "4", "03_agreement": "5"}}))


def test_supplement_page_links_resolve(tmp_path):
    _fake_run(tmp_path)
    page = figures.write_supplement(tmp_path)
    text = page.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    local = [link for link in parser.links if not link.startswith(("http:", "https:", "#"))]
    present = [link for link in local if (page.parent / link).exists()]
    # every figure, table and notebook written is linked, and every link to an existing run file resolves; the
    # notebooks that did not run this time are listed without a link
    assert "../figures/fig3b_np_label_roc.png" in present and "../figures/fig1a_class_counts.pdf" in present
    assert "../tables/table1_corrected_singlerater.csv" in present and "03_agreement.html" in present
    assert set(local) - set(present) <= {f"{nb}.html" for nb in ("01_data_prep", "03_agreement")} | {
        f"{a.notebook}.html" for a in figures.REGISTRY}
    assert not [link for link in local if link.endswith((".png", ".pdf", ".csv", ".md", ".ipynb"))
                and link not in present]
    assert "scratch_plot.png" in text.split("Not in the registry")[1]  # an unregistered figure is named
    assert "commit <code>abc123</code>" in text and "Whole run: 9 s" in text and "pretraining 3 s" in text
    assert ">pretraining<" not in text  # a step before the notebooks, not a notebook
    assert str(tmp_path) not in text  # relative links only


def _chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    for path in ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium"):
        if os.access(path, os.X_OK):
            return path
    return None


def test_supplement_loads_in_a_headless_browser(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium-headless-shell); the page's links "
                    "are still checked by test_supplement_page_links_resolve")
    _fake_run(tmp_path)
    page = figures.write_supplement(tmp_path)
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert 'data-broken-images="0"' in dom, dom[:500]
    assert 'data-images="2"' in dom  # the two registered figures' thumbnails loaded


def test_relativize_replaces_machine_paths_on_boundaries(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": ['data_dir = "/srv/x/repo/data/synthetic"\n'],
                     "outputs": [{"output_type": "stream", "name": "stdout",
                                  "text": ["outputs : /srv/x/out/results | /srv/x/repository/y\n"]},
                                 {"output_type": "execute_result", "metadata": {},
                                  "data": {"text/plain": ["PosixPath('/srv/x/out/.staging/03/figures/a.png')"]}}]}],
          "metadata": {"papermill": {"parameters": {"results_dir": "/srv/x/out/results"}}}, "nbformat": 4,
          "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    n = nbtools.relativize_paths(path, {"/srv/x/repo": "$REPO", "/srv/x/out": "$OUT",
                                        "/srv/x/out/.staging/03/figures": "$OUT/figures", "relative/path": "nope"})
    text = path.read_text()
    assert n == 4
    assert '$REPO/data/synthetic' in text and "$OUT/results" in text and "$OUT/figures/a.png" in text
    assert "/srv/x/repository/y" in text  # only whole path components are replaced
    assert "/srv/x/out" not in text and "/srv/x/repo/" not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_jupyterlab_command_serves_the_notebooks_with_the_project_kernel():
    """``./run_all.sh --lab`` (the README's command) started headless: the server lists the nucls-study kernel,
    and a cell executed through it imports this checkout's package."""
    import asyncio

    from tornado.websocket import websocket_connect

    port, token = _free_port(), "nucls-test-token"
    env = {**os.environ, "NUCLS_VENV": str(Path(sys.executable).parent.parent)}
    proc = subprocess.Popen([str(ROOT / "run_all.sh"), "--lab", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    try:
        specs = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernelspecs", headers=headers),
                                            timeout=5) as r:
                    specs = json.load(r)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {proc.stdout.read()[-3000:]}")
                time.sleep(1)
        assert specs is not None, "jupyter lab did not answer within 2 minutes"
        assert "nucls-study" in specs["kernelspecs"], sorted(specs["kernelspecs"])
        req = urllib.request.Request(f"{base}/api/kernels", data=json.dumps({"name": "nucls-study"}).encode(),
                                     headers={**headers, "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            kernel = json.load(r)

        async def run_cell(code: str) -> str:
            ws = await websocket_connect(f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels?token={token}")
            msg_id = "test-1"
            ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": "s",
                           "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            out = ""
            deadline = time.time() + 120
            while time.time() < deadline:
                raw = await ws.read_message()
                if raw is None:
                    break
                m = json.loads(raw)
                if m.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if m["msg_type"] == "stream":
                    out += m["content"]["text"]
                if m["msg_type"] == "error":
                    out += "ERROR " + m["content"]["ename"]
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" and out:
                    break
            ws.close()
            return out

        out = asyncio.run(run_cell("import nucls_utils, pathlib; print(pathlib.Path(nucls_utils.__file__).parent.parent,"
                                   " 6 * 7)"))
        assert out.split() == [str(ROOT), "42"], out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
