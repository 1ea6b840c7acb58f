"""The core-set metadata sqlite: tidy frames that agree with the CSV folder; clear errors on bad databases."""

import shutil
import sqlite3

import pytest

from nucls_utils import io as nio


def test_metadata_matches_sample_csvs(metadata_path, sample_dir):
    fovs, ann = nio.read_core_metadata(metadata_path)
    records = nio.read_dataset(sample_dir)
    sample = nio.annotations_frame(records)
    for r in records:
        meta = ann[ann["fovname"] == r.name]
        csv = sample[sample["fovname"] == r.name]
        # the same nuclei, in the same classes, with the same boxes
        key = ["raw_class", "xmin", "ymin", "xmax", "ymax"]
        assert sorted(map(tuple, meta[key].to_numpy().tolist())) == sorted(map(tuple, csv[key].to_numpy().tolist()))
    # and the FOV rectangles fall inside each sample image (like boxes, they may end 1 px past the edge)
    rects = nio.fov_rectangles(fovs)
    for r in records:
        x0, y0, x1, y1 = rects[r.name]
        assert 0 <= x0 < x1 <= r.image_shape[1] + 1 and 0 <= y0 < y1 <= r.image_shape[0] + 1
        assert (x1 - x0) * (y1 - y0) > 0.6 * r.image_shape[0] * r.image_shape[1]


def test_class_counts_match_the_release_notes(metadata_path):
    _, ann = nio.read_core_metadata(metadata_path)
    c = ann["raw_class"].value_counts()
    assert (c["tumor"], c["lymphocyte"], c["fibroblast"]) == (21039 + 32, 13530 + 110, 8609 + 19)
    assert ann["is_correction"].sum() == 213
    assert round(100 * (ann["type"] == "polyline").mean()) == 33


def _copy(metadata_path, tmp_path):
    dst = tmp_path / "meta.sqlite"
    shutil.copyfile(metadata_path, dst)
    return dst


def test_missing_table(metadata_path, tmp_path):
    db = _copy(metadata_path, tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE fov_meta")
    with pytest.raises(nio.NuclsFormatError, match=r"meta.sqlite: no table 'fov_meta'"):
        nio.read_core_metadata(db)


def test_unknown_class_names_the_row(metadata_path, tmp_path):
    db = _copy(metadata_path, tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE annotation_elements SET \"group\" = 'histiocyte' WHERE ann_id = 7")
        rowid = con.execute("SELECT rowid FROM annotation_elements WHERE ann_id = 7").fetchone()[0]
    with pytest.raises(nio.NuclsFormatError,
                       match=rf"annotation_elements, row {rowid}, field 'group': unknown class 'histiocyte'"):
        nio.read_core_metadata(db)


def test_not_a_database(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("hello")
    with pytest.raises(nio.NuclsFormatError, match="notes.sqlite: not a readable sqlite database"):
        nio.read_core_metadata(bad)
    with pytest.raises(nio.NuclsFormatError, match="metadata sqlite not found"):
        nio.read_core_metadata(tmp_path / "nope.sqlite")


def test_find_core_metadata(tmp_path, metadata_path):
    assert nio.find_core_metadata("none", tmp_path) is None
    assert nio.find_core_metadata("auto", tmp_path) is None
    (tmp_path / "ds").mkdir()
    shutil.copyfile(metadata_path, tmp_path / nio.CORE_METADATA_NAME)
    assert nio.find_core_metadata("auto", tmp_path / "ds") == (tmp_path / nio.CORE_METADATA_NAME).resolve()
    with pytest.raises(nio.NuclsFormatError, match="core-set metadata sqlite not found"):
        nio.find_core_metadata(str(tmp_path / "missing.sqlite"), None)


def test_metadata_rectangles_pass_on_the_sample_and_bad_ones_name_the_sqlite(metadata_path, sample_dir):
    fovs, _ = nio.read_core_metadata(metadata_path)
    rects = nio.fov_rectangles(fovs)
    records = nio.read_dataset(sample_dir, fov_rects=rects)
    assert all(r.fov_rect == rects[r.name] for r in records)
    name = records[0].name
    bad = fovs.copy()
    bad.loc[bad["fovname"] == name, "fov_xmax"] = 5000
    with pytest.raises(nio.NuclsFormatError, match=rf"{metadata_path.name}:fov_meta, field 'xmax': FOV rectangle "
                                                   rf"\(\d+, \d+, 5000, \d+\) of {name} lies outside"):
        nio.read_dataset(sample_dir, fov_rects=nio.fov_rectangles(bad))
