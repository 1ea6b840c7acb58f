"""The typed store of figure inputs (``nucls_utils.io.bundle``): every kind of value comes back equal and typed, the
format each kind is stored in, and a missing or foreign bundle is rejected by name."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeRegressor

from nucls_utils.io import read_dataset
from nucls_utils.io.bundle import BUNDLE_FILE, bundle_meta, load_bundle, save_bundle


@dataclass(frozen=True)
class _Point:
    x: float
    label: str
    extra: np.ndarray


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"i": np.arange(4, dtype=np.int16), "f": [0.5, np.nan, 2.0, -1.0],
                         "c": pd.Categorical(["a", "b", "a", "c"], categories=["c", "b", "a"]),
                         "s": ["x", "y", None, "z"], "b": [True, False, True, True]},
                        index=pd.Index([10, 11, 12, 13], name="anchor"))


def test_nested_values_round_trip_with_their_types(tmp_path):
    value = {
        "frame": _frame(),
        "series": pd.Series([1.5, 2.5], index=["a", "b"], name="score"),
        "unnamed": pd.Series([1, 2]),
        "array": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "scalars": [np.float32(0.25), np.int64(7), 3, 2.5, float("nan"), None, True, "s"],
        "tuple": (1, ("a", 2)),
        7: "an int key",
        ("fold", 1): "a tuple key",
        "point": _Point(1.5, "p", np.ones(2)),
        "int_columns": pd.DataFrame({0: [1, 2], 1: [3, 4]}),
    }
    save_bundle(tmp_path / "b", value, meta={"figure": "x"})
    back = load_bundle(tmp_path / "b")
    assert list(back) == list(value)
    pd.testing.assert_frame_equal(back["frame"], value["frame"])
    pd.testing.assert_series_equal(back["series"], value["series"])
    pd.testing.assert_series_equal(back["unnamed"], value["unnamed"])
    assert back["array"].dtype == np.uint8 and (back["array"] == value["array"]).all()
    s = back["scalars"]
    assert type(s[0]) is np.float32 and s[0] == np.float32(0.25) and type(s[1]) is np.int64 and s[1] == 7
    assert s[2:4] == [3, 2.5] and np.isnan(s[4]) and s[5:] == [None, True, "s"]
    assert back["tuple"] == (1, ("a", 2)) and back[7] == "an int key" and back[("fold", 1)] == "a tuple key"
    assert isinstance(back["point"], _Point) and back["point"].x == 1.5 and (back["point"].extra == 1).all()
    pd.testing.assert_frame_equal(back["int_columns"], value["int_columns"])
    assert bundle_meta(tmp_path / "b") == {"figure": "x"}


def test_each_kind_is_stored_in_its_own_format(tmp_path):
    save_bundle(tmp_path / "b", {"frame": _frame(), "array": np.zeros(3), "tuples": pd.DataFrame({"t": [(1, 2), (3,)]}),
                                 "tree": DecisionTreeRegressor(max_depth=1).fit([[0], [1]], [0, 1])})
    doc = json.loads((tmp_path / "b" / BUNDLE_FILE).read_text())
    kinds = {k: v["t"] for k, v in ((k["v"], v) for k, v in doc["value"]["items"])}
    # parquet where the frame reads back equal; a column of tuples comes back as arrays, so that frame is pickled
    assert kinds == {"frame": "frame", "array": "ndarray", "tuples": "pickle", "tree": "pickle"}
    assert doc["stored_as"] == ["npy", "parquet", "pkl"]
    back = load_bundle(tmp_path / "b")
    assert back["tree"].predict([[1]])[0] == 1.0 and back["tuples"]["t"].tolist() == [(1, 2), (3,)]


def test_real_fov_records_round_trip(tmp_path, sample_dir):
    records = read_dataset(sample_dir)[:2]
    save_bundle(tmp_path / "b", {"records": records})
    back = load_bundle(tmp_path / "b")["records"]
    assert [r.name for r in back] == [r.name for r in records]
    for a, b in zip(back, records, strict=True):
        assert len(a.nuclei) == len(b.nuclei)
        assert [n.raw_class for n in a.nuclei] == [n.raw_class for n in b.nuclei]
        assert a.nuclei == b.nuclei  # frozen dataclasses: every field, coordinates included
        assert np.array_equal(a.read_rgb(), b.read_rgb())


def test_rewriting_replaces_the_bundle_and_leaves_no_temporary_folder(tmp_path):
    save_bundle(tmp_path / "b", {"a": np.zeros(5)})
    save_bundle(tmp_path / "b", {"b": 1})
    assert load_bundle(tmp_path / "b") == {"b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [BUNDLE_FILE]


def test_a_value_that_cannot_be_stored_leaves_nothing(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        save_bundle(tmp_path / "b", {"f": lambda x: x})
    assert list(tmp_path.iterdir()) == []


def test_missing_and_foreign_bundles_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no stored bundle"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / BUNDLE_FILE).write_text(json.dumps({"format": 99, "value": {}}))
    with pytest.raises(ValueError, match="bundle format 99"):
        load_bundle(tmp_path / "b")
