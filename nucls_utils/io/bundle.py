"""A typed store for the inputs of a figure (or any nested value a stage hands to the next): ``save_bundle`` writes a
folder, ``load_bundle`` gives the same value back.

The value is a tree of dicts, lists, tuples and dataclasses whose leaves are JSON scalars, numpy arrays and scalars,
pandas frames and series. Each kind is stored in the format that keeps its type:

- frames and series: parquet (dtypes, index and categories kept), used only when the frame reads back equal
  (``pandas.testing``); otherwise, e.g. for integer column names, a pickle of that one frame;
- numpy arrays: ``.npy`` (object arrays: pickle); numpy scalars: their dtype and value in JSON;
- dataclasses: the class's import path and each field (rebuilt without calling ``__init__``, so a derived or
  validated field comes back as stored);
- anything else (a fitted scikit-learn tree, say): a pickle of that object, named in ``bundle.json`` with its type.

``bundle.json`` holds the tree, with a file name at each leaf stored beside it, and the caller's ``meta``. The folder
is written under a temporary name and renamed when complete, so a reader never sees half a bundle.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["save_bundle", "load_bundle", "bundle_meta", "BUNDLE_FILE"]

BUNDLE_FILE = "bundle.json"
_FORMAT = 1


def _type_path(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}:{t.__qualname__}"


def _import_type(path: str) -> type:
    module, qualname = path.split(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except (AssertionError, TypeError, ValueError):
        return False
    return True


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.n = 0

    def _name(self, ext: str) -> str:
        self.n += 1
        return f"{self.n:04d}.{ext}"

    def _pickle(self, obj: Any) -> dict:
        name = self._name("pkl")
        with open(self.folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        return {"t": "pickle", "file": name, "type": _type_path(obj)}

    def _frame(self, frame: pd.DataFrame, kind: str, series_name: Any = None) -> dict:
        name = self._name("parquet")
        path = self.folder / name
        try:
            frame.to_parquet(path)
            ok = _frames_equal(pd.read_parquet(path), frame)
        except (ValueError, TypeError, ImportError, NotImplementedError, OverflowError, KeyError):
            ok = False
        if not ok:
            path.unlink(missing_ok=True)
            return self._pickle(frame if kind == "frame" else frame.iloc[:, 0].rename(series_name))
        out: dict[str, Any] = {"t": kind, "file": name}
        if kind == "series":
            out["name"] = self.encode(series_name)
        return out

    def encode(self, v: Any) -> dict:
        if v is None or isinstance(v, (bool, str)):
            return {"t": "json", "v": v}
        if isinstance(v, (int, float)) and type(v) in (int, float):
            if isinstance(v, float) and not math.isfinite(v):
                return {"t": "float", "v": repr(v)}
            return {"t": "json", "v": v}
        if isinstance(v, np.generic) and not isinstance(v, np.object_):
            return {"t": "npscalar", "dtype": v.dtype.str, "v": repr(v.item()) if v.dtype.kind == "f" else v.item()}
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                return self._pickle(v)
            name = self._name("npy")
            np.save(self.folder / name, v, allow_pickle=False)
            return {"t": "ndarray", "file": name}
        if isinstance(v, pd.DataFrame):
            return self._frame(v, "frame")
        if isinstance(v, pd.Series):
            return self._frame(v.to_frame("__value__"), "series", v.name)
        if type(v) in (list, tuple):
            return {"t": type(v).__name__, "items": [self.encode(x) for x in v]}
        if type(v) is dict:
            return {"t": "dict", "items": [[self.encode(k), self.encode(x)] for k, x in v.items()]}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {"t": "dataclass", "type": _type_path(v),
                    "fields": {f.name: self.encode(getattr(v, f.name)) for f in dataclasses.fields(v)}}
        return self._pickle(v)


class _Reader:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def decode(self, node: dict) -> Any:
        t = node["t"]
        if t == "json":
            return node["v"]
        if t == "float":
            return float(node["v"])
        if t == "npscalar":
            value = node["v"]
            return np.dtype(node["dtype"]).type(float(value) if isinstance(value, str) else value)
        if t == "ndarray":
            return np.load(self.folder / node["file"], allow_pickle=False)
        if t == "frame":
            return pd.read_parquet(self.folder / node["file"])
        if t == "series":
            return pd.read_parquet(self.folder / node["file"])["__value__"].rename(self.decode(node["name"]))
        if t in ("list", "tuple"):
            items = [self.decode(x) for x in node["items"]]
            return items if t == "list" else tuple(items)
        if t == "dict":
            return {self.decode(k): self.decode(x) for k, x in node["items"]}
        if t == "dataclass":
            cls = _import_type(node["type"])
            obj: Any = object.__new__(cls)
            for name, x in node["fields"].items():
                object.__setattr__(obj, name, self.decode(x))
            return obj
        if t == "pickle":
            with open(self.folder / node["file"], "rb") as f:
                return pickle.load(f)  # noqa: S301 - a bundle this package wrote
        raise ValueError(f"{self.folder / BUNDLE_FILE}: unknown node type {t!r}")


def save_bundle(folder: str | os.PathLike[str], value: Any, meta: dict | None = None) -> Path:
    """Store ``value`` in ``folder`` (replaced if it exists) and return the folder; ``meta`` goes into
    ``bundle.json`` as it is (JSON-serialisable)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        writer = _Writer(tmp)
        tree = writer.encode(value)
        kinds = sorted({p.suffix.lstrip(".") for p in tmp.iterdir()})
        doc = {"format": _FORMAT, "meta": meta or {}, "stored_as": kinds, "value": tree}
        (tmp / BUNDLE_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _read_doc(folder: Path) -> dict:
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no stored bundle here (was the stage that writes it run?)")
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != _FORMAT:
        raise ValueError(f"{path}: bundle format {doc.get('format')!r}, this code reads {_FORMAT}")
    return doc


def load_bundle(folder: str | os.PathLike[str]) -> Any:
    """The value :func:`save_bundle` stored in ``folder``."""
    folder = Path(folder)
    return _Reader(folder).decode(_read_doc(folder)["value"])


def bundle_meta(folder: str | os.PathLike[str]) -> dict:
    """The ``meta`` stored with a bundle."""
    return _read_doc(Path(folder))["meta"]
