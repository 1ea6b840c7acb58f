"""One profile registry: every stage's per-profile settings come from ``nucls_utils.profiles``, and no notebook or
other module declares a profile-keyed number of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nucls_utils import config, profiles

ROOT = Path(__file__).resolve().parents[1]


def _registries():
    from nucls_utils.baselines import study
    from nucls_utils.model import classifier, pretrain, train
    from nucls_utils.phantom import cohort, slide
    from nucls_utils.suggestions import refine

    return {"cohort": cohort.PROFILE_SPECS, "pretrain": pretrain.PRETRAIN_PROFILES, "refiner": refine.REFINER_PROFILES,
            "model": train.MODEL_PROFILES, "training": train.TRAIN_PROFILES,
            "classifier": classifier.CLASSIFIER_PROFILES, "baselines": study.BASELINE_PROFILES,
            "slide": slide.SLIDE_SPECS}


def test_every_stage_registry_is_built_from_the_profiles_module():
    from nucls_utils.phantom.calibration import HOSPITAL_SLIDE_COUNTS

    regs = _registries()
    assert set(regs) == set(profiles.STAGES)
    for stage, reg in regs.items():
        assert tuple(reg) == profiles.PROFILE_NAMES, stage
        for p in profiles.PROFILE_NAMES:
            for key, value in profiles.STAGES[stage][p].items():
                if stage == "cohort" and key == "hospital_slides" and value is None:
                    value = HOSPITAL_SLIDE_COUNTS
                got = getattr(reg[p], key)
                if isinstance(value, dict):  # a nested config (the baselines' networks): its fields
                    got = {k: getattr(got, k) for k in value}
                assert got == (tuple(value) if isinstance(got, tuple) else value), (stage, p, key)
    # a few of the numbers the README quotes, read back through the stage registries
    assert regs["training"]["cpu"].iterations == 560 and regs["training"]["paper"].iterations == 16000
    assert regs["pretrain"]["cpu"].detector_iterations == 1500
    assert regs["cohort"]["paper"].n_fovs == 1736


def test_notebook_settings_reach_the_run_context():
    for p in profiles.PROFILE_NAMES:
        prof = config.get_profile(p)
        assert prof.settings == profiles.settings(p)
        assert prof.expects_gpu == (p == "paper")
    assert profiles.settings("cpu").multirater_fovs == 24
    from nucls_utils import dtale
    from nucls_utils.model import experiments

    assert experiments.plan_parallelism("cpu") == (2, 1)
    assert dtale.tree_settings("smoke", 2000)[1] == 10  # 0.5 % of the explained nuclei
    with pytest.raises(ValueError, match="choose one of smoke, cpu, paper"):
        config.get_profile("laptop")


_PROFILE_KEYED = re.compile(r"""\{\s*["']smoke["']\s*:""")


def test_no_profile_keyed_numbers_outside_the_registry():
    offenders = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code" and _PROFILE_KEYED.search("".join(cell["source"])):
                offenders.append(f"{nb.name} cell {k}")
    for py in sorted((ROOT / "nucls_utils").rglob("*.py")):
        if py.name != "profiles.py" and _PROFILE_KEYED.search(py.read_text(encoding="utf-8")):
            offenders.append(str(py.relative_to(ROOT)))
    assert not offenders


def test_the_side_by_side_table_lists_every_stage():
    t = profiles.table()
    assert set(t["stage"]) == set(profiles.STAGES) | {"notebooks"}
    row = t[(t["stage"] == "training") & (t["setting"] == "iterations")].iloc[0]
    assert (row["smoke"], row["cpu"], row["paper"], row["differs"]) == (4, 560, 16000, True)
    assert profiles._main([]) == 0


def test_table_s7_lists_every_setting_and_what_differs_from_the_paper():
    from nucls_utils.model.train import hyperparameter_table

    paper, cpu = hyperparameter_table("paper"), hyperparameter_table("cpu")
    assert not paper["differs"].any() and list(paper["setting"]) == list(cpu["setting"])
    differs = set(cpu.loc[cpu["differs"], "setting"])
    assert {"iterations", "backbone_layer", "scale_factor"} <= differs
    # a setting that is None in both is not a difference (it was, while the table held None as NaN)
    both_none = cpu[(cpu["this run"] == "None") & (cpu["paper (Table S7)"] == "None")]
    assert "finetune_rois_per_image" in set(both_none["setting"]) and not both_none["differs"].any()
