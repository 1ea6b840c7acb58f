"""Issue 13, hole 9: the simulated study of notebook 02 is a function of the seed.

Two processes with different ``PYTHONHASHSEED`` (and, as torch seeds its global generator at random in every
process, different torch seeds) run bootstrap -> refinement -> study on the smoke cohort; every file they write
(the refiner's cached weights, loss history and suggestions, and the whole study folder) must be byte-identical.
Before the fix the refiner's initial weights came from torch's unseeded global generator, so the weights, the
refined suggestions and everything the crowd simulation drew after them differed from run to run.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from nucls_utils.io.manifest import hash_files

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from nucls_utils import crowd, suggestions
    from nucls_utils import io as nio

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    records = nio.read_dataset(root)
    boot = suggestions.bootstrap_dataset(records, root, progress=False)
    # a threshold low enough that a 3-iteration model suggests nuclei, so the study depends on its weights
    cfg = suggestions.RefinerConfig(iterations=3, batch_size=2, score_threshold=0.15)
    ref = suggestions.refine_dataset(records, boot, cfg, seed=0, progress=False, cache_dir=out / "refiner")
    assert sum(map(len, ref.refined)) > 0
    rng = np.random.default_rng(0)
    roster = crowd.make_roster(rng)
    feats = suggestions.fov_sampling_features(ref.refined, ref.confidences, boot)
    sample = suggestions.stratified_fov_sample(feats, 4, rng)
    crowd.write_annotation_study(out / "study", records, boot, ref.refined, ref.confidences, sample, roster, rng,
                                 seed=0)
""")


@pytest.mark.timeout(240)
def test_study_is_byte_identical_across_processes_and_hash_seeds(smoke_cohort, tmp_path):
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    procs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(smoke_cohort), str(tmp_path / hash_seed)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=220)
        assert p.returncode == 0, out[-3000:]
    a, b = (hash_files(tmp_path / s, exclude=()) for s in ("1", "2"))
    assert any(k.startswith("refiner/") for k in a) and any(k.startswith("study/multirater/") for k in a)
    assert a.keys() == b.keys()
    differ = sorted(k for k in a if a[k] != b[k])
    assert not differ, f"{len(differ)} of {len(a)} files differ, e.g. {differ[:5]}"
