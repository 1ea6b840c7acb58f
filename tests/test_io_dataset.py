"""Single-rater dataset folders: the real sample loads and round-trips; bad input fails clearly and atomically."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nucls_utils import io as nio
from nucls_utils import taxonomy as tx


def test_real_sample_loads(sample_dir):
    records = nio.read_dataset(sample_dir)
    assert len(records) == 17
    ann = nio.annotations_frame(records)
    assert len(ann) == 726
    counts = ann["raw_class"].value_counts().to_dict()
    assert counts == {"lymphocyte": 217, "tumor": 199, "fibroblast": 115, "unlabeled": 90, "plasma_cell": 75,
                      "macrophage": 20, "apoptotic_body": 6, "mitotic_figure": 3, "vascular_endothelium": 1}
    assert (ann["type"] == "polyline").sum() == 215 and (ann["type"] == "rectangle").sum() == 511
    # apoptotic bodies are AMBIGUOUS in the analysis even though the release CSVs say other_nucleus
    assert set(ann.loc[ann["raw_class"] == "apoptotic_body", "main_class"]) == {"AMBIGUOUS"}
    for r in records:
        h, w = r.image_shape
        with Image.open(r.rgb_path) as im:
            assert im.size == (w, h)
        assert 300 <= h <= 430 and 300 <= w <= 430


def test_real_sample_round_trips(sample_dir, tmp_path):
    records = nio.read_dataset(sample_dir)
    nio.write_dataset(records, tmp_path / "copy")
    again = nio.read_dataset(tmp_path / "copy")
    assert again == records  # frozen dataclasses: every field of every nucleus, in order
    # CSVs are byte-identical apart from line endings and the index column's formatting
    name = records[0].name
    a = pd.read_csv(sample_dir / "csv" / f"{name}.csv", index_col=0)
    b = pd.read_csv(tmp_path / "copy" / "csv" / f"{name}.csv", index_col=0)
    pd.testing.assert_frame_equal(a, b)
    assert np.array_equal(records[0].read_rgb(), again[0].read_rgb())
    assert sorted(p.name for p in (tmp_path / "copy" / "mask").iterdir()) == sorted(
        f"{r.name}.png" for r in records)
    # the written masks read back as the rasterised instances, with the GT codes of the classes
    codes, inst = again[3].read_mask()
    assert np.array_equal(inst, nio.rasterize_instances(again[3].nuclei, again[3].image_shape))
    assert set(np.unique(codes)) <= {0} | {tx.gt_code(n.raw_classification) for n in again[3].nuclei}
    with pytest.raises(nio.NuclsFormatError, match="no mask for this FOV"):
        records[0].read_mask()


def test_missing_mask_is_an_error(sample_dir, tmp_path):
    records = nio.read_dataset(sample_dir)[:3]
    nio.write_dataset(records, tmp_path / "copy")
    (tmp_path / "copy" / "mask" / f"{records[1].name}.png").unlink()
    with pytest.raises(nio.NuclsFormatError, match=rf"{records[1].name}.csv: missing mask: mask/ exists"):
        nio.read_dataset(tmp_path / "copy")


def test_fov_rectangles_round_trip(sample_dir, tmp_path):
    records = nio.read_dataset(sample_dir)
    rects = {r.name: (5, 6, r.image_shape[1] - 7, r.image_shape[0] - 8) for r in records}
    with_rects = nio.read_dataset(sample_dir, fov_rects=rects)
    nio.write_dataset(with_rects, tmp_path / "copy")
    assert (tmp_path / "copy" / "ALL_FOV_LOCATIONS.csv").exists()
    assert nio.read_dataset(tmp_path / "copy") == with_rects


# --------------------------------------------------------------------------------------------------------------
# Bad input: one clear error naming the file, row and field; nothing half-written.
# --------------------------------------------------------------------------------------------------------------
def _edit_csv(path: Path, row: int, column: str, value: str) -> None:
    df = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    df.loc[df.index[row], column] = value
    df.to_csv(path)


def _first_csv(root: Path) -> Path:
    return sorted((root / "csv").glob("*.csv"))[0]


def _assert_fails_cleanly(src: Path, out_parent: Path, pattern: str) -> None:
    """convert_dataset raises with `pattern` and leaves neither the output nor temporary folders behind."""
    out = out_parent / "converted"
    with pytest.raises(nio.NuclsFormatError, match=pattern):
        nio.convert_dataset(src, out)
    assert not out.exists()
    assert [p.name for p in out_parent.iterdir() if p.name != src.name] == []


def test_bad_integer(small_dataset, tmp_path):
    csv = _first_csv(small_dataset)
    _edit_csv(csv, 3, "xmin", "12a")
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{csv.name}, row 3, field 'xmin': '12a' is not an integer")


def test_missing_column(small_dataset):
    csv = _first_csv(small_dataset)
    pd.read_csv(csv, index_col=0).drop(columns=["type"]).to_csv(csv)
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{csv.name}, field 'type': missing column\(s\) type")


def test_unknown_class(small_dataset):
    csv = _first_csv(small_dataset)
    _edit_csv(csv, 1, "raw_classification", "lymphocite")
    _assert_fails_cleanly(small_dataset, small_dataset.parent,
                          rf"{csv.name}, row 1, field 'raw_classification': unknown raw class 'lymphocite'")


def test_inconsistent_main_class(small_dataset):
    csv = _first_csv(small_dataset)
    _edit_csv(csv, 0, "main_classification", "lymphocyte")
    _assert_fails_cleanly(small_dataset, small_dataset.parent,
                          rf"{csv.name}, row 0, field 'main_classification': main class 'lymphocyte' does not match")


def test_box_outside_image(small_dataset):
    csv = _first_csv(small_dataset)
    with Image.open(small_dataset / "rgb" / f"{csv.stem}.png") as im:
        w = im.size[0]
    df = pd.read_csv(csv, index_col=0, dtype=str, keep_default_na=False)
    xs = [int(v) for v in df.loc[df.index[2], "coords_x"].split(",")]
    shift = w + 5 - max(xs)
    df.loc[df.index[2], "coords_x"] = ",".join(str(v + shift) for v in xs)
    df.loc[df.index[2], "xmin"] = str(min(xs) + shift)
    df.loc[df.index[2], "xmax"] = str(max(xs) + shift)
    df.to_csv(csv)
    _assert_fails_cleanly(small_dataset, small_dataset.parent,
                          rf"{csv.name}, row 2, field 'xmax': box .* lies outside the {w} x \d+ px image")


def test_missing_image(small_dataset):
    csv = _first_csv(small_dataset)
    (small_dataset / "rgb" / f"{csv.stem}.png").unlink()
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{csv.name}: missing image: no rgb/{csv.stem}.png")


def test_wrong_folder_layout(small_dataset):
    (small_dataset / "csv").rename(small_dataset / "annotations")
    _assert_fails_cleanly(small_dataset, small_dataset.parent,
                          r"ds: wrong folder layout: no 'csv/' folder \(found \['annotations', 'rgb'\]\)")


def test_ragged_row(small_dataset):
    csv = _first_csv(small_dataset)
    lines = csv.read_text().splitlines()
    lines[2] = lines[2] + ",extra"
    csv.write_text("\n".join(lines) + "\n")
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{csv.name}, row 1: has 12 fields but the header has 11")


def test_coordinate_count_mismatch(small_dataset):
    csv = _first_csv(small_dataset)
    df = pd.read_csv(csv, index_col=0, dtype=str, keep_default_na=False)
    df.loc[df.index[0], "coords_y"] = df.loc[df.index[0], "coords_y"].rsplit(",", 1)[0]
    df.to_csv(csv)
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{csv.name}, row 0, field 'coords_y': coords_x has \d+ values")


def test_bad_fov_name(small_dataset):
    csv = _first_csv(small_dataset)
    bad = "slide7_region3"
    csv.rename(csv.with_name(f"{bad}.csv"))
    (small_dataset / "rgb" / f"{csv.stem}.png").rename(small_dataset / "rgb" / f"{bad}.png")
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{bad}.csv: not a NuCLS FOV name")


def test_corrupt_image(small_dataset):
    csv = _first_csv(small_dataset)
    (small_dataset / "rgb" / f"{csv.stem}.png").write_bytes(b"not a png")
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{csv.stem}.png: not a readable image")


def test_write_refuses_to_clobber_and_leaves_nothing_on_failure(sample_dir, tmp_path, monkeypatch):
    records = nio.read_dataset(sample_dir)[:2]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        nio.write_dataset(records, out)
    # an image that disappears half-way through writing: the target never appears, no temp folder is left
    gone = tmp_path / "gone.png"
    gone.write_bytes((sample_dir / "rgb" / f"{records[1].name}.png").read_bytes())
    broken = [records[0], nio.FovRecord(records[1].name, records[1].image_shape, records[1].nuclei, None, gone)]
    import nucls_utils.io.dataset as ds

    original = ds.shutil.copyfile
    calls = []

    def flaky(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(a, b)

    monkeypatch.setattr(ds.shutil, "copyfile", flaky)
    with pytest.raises(OSError, match="disk full"):
        nio.write_dataset(broken, tmp_path / "new")
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone.png", "out"]
