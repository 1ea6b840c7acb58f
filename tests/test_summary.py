"""Dataset summaries agree with direct counts."""

import numpy as np
import pandas as pd

from nucls_utils import io as nio
from nucls_utils import summary
from nucls_utils.figures import save_figure
from nucls_utils.plots import dataset as plotting


def test_summaries_on_real_sample(sample_dir, tmp_path):
    records = nio.read_dataset(sample_dir)
    ann, fovs = nio.annotations_frame(records), nio.fovs_frame(records)
    counts = summary.class_counts(ann).set_index(["level", "class"])
    assert counts.loc[("raw", "lymphocyte"), "n"] == 217
    assert counts.loc[("main", "AMBIGUOUS"), "n"] == 90 + 6
    assert counts.loc[("super", "sTIL"), "n"] == 217 + 75
    for level in ("raw", "main", "super"):
        assert counts.loc[level, "n"].sum() == 726
        np.testing.assert_allclose(counts.loc[level, "percent"].sum(), 100)
    per = summary.instances_per_fov(ann, fovs)
    assert per.sum() == 726 and len(per) == 17
    assert per.to_dict() == {r.name: len(r.nuclei) for r in records}
    cats = summary.size_categories(ann)
    np.testing.assert_allclose(cats["nuclei_percent"].sum(), 100)
    direct_small = 100 * (ann["area_px"] < 32**2).mean()
    np.testing.assert_allclose(cats.loc[cats["category"] == "small", "nuclei_percent"].item(), direct_small)
    sizes = summary.object_sizes(ann, fovs)
    i = 5
    area = records[0].image_shape[0] * records[0].image_shape[1]
    np.testing.assert_allclose(sizes["percent_of_fov"].iloc[i], 100 * ann["area_px"].iloc[i] / area)
    fig = plotting.plot_instances_and_sizes(per, sizes)
    png, pdf = save_figure(fig, "figS9_test", tmp_path)
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 5_000


def test_class_by_fold_percentages():
    ann = pd.DataFrame({"slide_name": ["TCGA-A1-a", "TCGA-A1-a", "TCGA-A2-b", "TCGA-A2-b", "TCGA-A2-b"],
                        "super_class": ["sTIL", "tumor_any", "sTIL", "sTIL", "AMBIGUOUS"]})
    assign = pd.DataFrame({"slide_name": ["TCGA-A1-a", "TCGA-A2-b"], "hospital": ["A1", "A2"], "fold": [1, 2]})
    t = summary.class_by_fold(ann, assign, "super").set_index(["fold", "class"])
    assert t.loc[(2, "sTIL"), "n"] == 2
    np.testing.assert_allclose(t.loc[(2, "sTIL"), "percent"], 200 / 3)
    np.testing.assert_allclose(t.loc[(1, "tumor_any"), "percent"], 50)
    assert t.loc[(1, "other_nucleus"), "n"] == 0
