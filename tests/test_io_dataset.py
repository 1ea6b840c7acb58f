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


# --------------------------------------------------------------------------------------------------------------
# Holes found by the bad-input review (issue 13): one test per hole.
# --------------------------------------------------------------------------------------------------------------
def test_truncated_png_is_an_error_naming_it(small_dataset, tmp_path):
    csv = _first_csv(small_dataset)
    png = small_dataset / "rgb" / f"{csv.stem}.png"
    records = nio.read_dataset(small_dataset)  # read while the image is intact
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 3])  # the header survives, the pixel data does not
    _assert_fails_cleanly(small_dataset, small_dataset.parent, rf"{png.name}: not a readable image")
    # an image that goes bad after the dataset was read: read_rgb names the file, not just "truncated"
    with pytest.raises(nio.NuclsFormatError, match=rf"{png.name}: not a readable image"):
        records[0].read_rgb()


def test_duplicated_row_is_an_error_naming_both_rows(small_dataset):
    csv = _first_csv(small_dataset)
    lines = csv.read_text().splitlines()
    lines.append("99" + lines[3][lines[3].index(","):])  # data row 2 again, with a fresh index
    csv.write_text("\n".join(lines) + "\n")
    row = len(lines) - 2
    _assert_fails_cleanly(small_dataset, small_dataset.parent,
                          rf"{csv.name}, row {row}: duplicates row 2 \(the same nucleus")


def test_utf8_bom_before_a_named_first_column_loads_as_without(sample_dir, tmp_path):
    src = sorted((sample_dir / "csv").glob("*.csv"))[0]
    df = pd.read_csv(src, index_col=0, dtype=str, keep_default_na=False)
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    df.to_csv(plain, index=False)  # first column: raw_classification
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert nio.read_fov_csv(bom) == nio.read_fov_csv(plain) == nio.read_fov_csv(src)


def test_latin1_byte_names_the_row(small_dataset):
    csv = _first_csv(small_dataset)
    lines = csv.read_bytes().split(b"\n")
    i = lines[4].index(b",") + 2
    lines[4] = lines[4][:i] + b"\xf6" + lines[4][i:]  # a Latin-1 o-umlaut inside the raw class of data row 3
    csv.write_bytes(b"\n".join(lines))
    offset = csv.read_bytes().index(b"\xf6")
    _assert_fails_cleanly(small_dataset, small_dataset.parent,
                          rf"{csv.name}, row 3, field 'raw_classification': not UTF-8 text: byte 0xf6 at byte "
                          rf"offset {offset}")


def test_fov_rectangle_outside_the_image_is_an_error(small_dataset):
    records = nio.read_dataset(small_dataset)
    names = [r.name for r in records]
    h, w = records[1].image_shape
    locations = small_dataset / "ALL_FOV_LOCATIONS.csv"
    pd.DataFrame([(names[0], 5, 5, 100, 100), (names[1], 5, 5, w + 40, 100)],
                 columns=["fovname", "xmin", "ymin", "xmax", "ymax"]).to_csv(locations, index=False)
    _assert_fails_cleanly(small_dataset, small_dataset.parent,
                          rf"ALL_FOV_LOCATIONS.csv, row 1, field 'xmax': FOV rectangle \(5, 5, {w + 40}, 100\) "
                          rf"of {names[1]} lies outside the {w} x {h} px image")
    locations.unlink()
    # rectangles given by the caller (e.g. from the core-set metadata) are checked the same way
    with pytest.raises(nio.NuclsFormatError, match=r"fov_rects, field 'ymin': FOV rectangle \(5, -30, 50, 60\)"):
        nio.read_dataset(small_dataset, fov_rects={names[2]: (5, -30, 50, 60)})
    with pytest.raises(nio.NuclsFormatError, match=r"field 'xmax': FOV rectangle \(50, 5, 50, 60\) .* is empty"):
        nio.read_dataset(small_dataset, fov_rects={names[2]: (50, 5, 50, 60)})


def test_fov_locations_reject_inverted_rectangles_and_duplicate_names(tmp_path):
    path = tmp_path / "ALL_FOV_LOCATIONS.csv"
    path.write_text("fovname,xmin,ymin,xmax,ymax\na,1,2,30,40\nb,1,50,30,40\n")
    with pytest.raises(nio.NuclsFormatError, match=r"ALL_FOV_LOCATIONS.csv, row 1, field 'ymax': ymax=40 is not "
                                                   r"larger than ymin=50"):
        nio.read_fov_locations(path)
    path.write_text("fovname,xmin,ymin,xmax,ymax\na,1,2,30,40\nb,1,2,30,40\na,1,2,31,40\n")
    with pytest.raises(nio.NuclsFormatError, match=r"ALL_FOV_LOCATIONS.csv, row 2, field 'fovname': FOV 'a' "
                                                   r"is listed twice \(also row 0\)"):
        nio.read_fov_locations(path)


# --------------------------------------------------------------------------------------------------------------
# Multi-rater folders (the reader lives in nucls_utils.io.multirater)
# --------------------------------------------------------------------------------------------------------------
def _tiny_multirater(small_dataset: Path, root: Path) -> list:
    records = nio.read_dataset(small_dataset)[:2]
    ann = {("E", "NP.1", r.name): r.nuclei[:3] for r in records}
    ann[("E", "NP.2", records[0].name)] = records[0].nuclei[3:5]
    nio.write_multirater(ann, root, {records[0].name: records[0].rgb_path})  # only FOV 0 has its image
    return records


def test_multirater_box_outside_a_present_image_is_an_error(small_dataset, tmp_path):
    records = _tiny_multirater(small_dataset, tmp_path / "mr")
    h, w = records[0].image_shape
    far = nio.Nucleus.from_box("tumor", w + 50, 10, w + 80, 40)
    csv = tmp_path / "mr" / "E" / "raw" / "csv" / f"NP.1_#_E_#_{records[0].name}.csv"
    nio.write_fov_csv([far], csv)
    with pytest.raises(nio.NuclsFormatError, match=rf"{csv.name}, row 0, field 'xmin': box .* lies outside the "
                                                   rf"{w} x {h} px image"):
        nio.read_multirater(tmp_path / "mr")
    # without its image, a FOV's boxes cannot be checked against it (and are not)
    other = tmp_path / "mr" / "E" / "raw" / "csv" / f"NP.1_#_E_#_{records[1].name}.csv"
    nio.write_fov_csv([far], other)
    csv.unlink()
    assert nio.read_multirater(tmp_path / "mr")[("E", "NP.1", records[1].name)] == (far,)


@pytest.mark.parametrize("prefix, message", [
    ("_#_E_#_", "empty participant"),
    ("NP.1_#_E_#_extra_#_", "expected '<participant>_#_<set>_#_<fovname>'"),
    ("NP.1_#_E_#_slide7_", "not a NuCLS FOV name"),
])
def test_multirater_bad_file_names_are_errors_naming_the_path(small_dataset, tmp_path, prefix, message):
    records = _tiny_multirater(small_dataset, tmp_path / "mr")
    folder = tmp_path / "mr" / "E" / "raw" / "csv"
    bad = folder / f"{prefix}{records[1].name}.csv"
    bad = bad.with_name(bad.name.replace("_id-", "-", 1)) if "slide7" in prefix else bad
    (folder / f"NP.1_#_E_#_{records[1].name}.csv").rename(bad)
    with pytest.raises(nio.NuclsFormatError, match=message) as e:
        nio.read_multirater(tmp_path / "mr")
    assert e.value.path == str(bad)  # the full path, folder included
