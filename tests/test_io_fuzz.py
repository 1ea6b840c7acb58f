"""Property-based fuzzing of the input readers: mutated files load faithfully or fail with a NuclsFormatError.

The property, for each reader
-----------------------------
A reader may only (a) raise :class:`NuclsFormatError` whose ``path`` (and message) names the mutated file or name,
or (b) return exactly what an independent, strict reference parser written here (stdlib ``csv``, string splitting,
no code shared with the package) makes of the mutated input. The reference spells out the accepted formats
(the module docstrings of :mod:`nucls_utils.io.dataset` and :func:`nucls_utils.io.naming.parse_fov_name`): the
reference *parse* says what the text means, the reference *checks* say whether that meaning is valid (known,
consistent classes; a box that matches its boundary and lies inside the image, within 1 px; no exact duplicate).
Both directions are asserted: the reader accepts **iff** the reference accepts, and then returns the reference's
records. So a mutation that makes a semantically valid different file (a row deleted, a coordinate moved by 1 px,
a class and its main/super classes swapped together) must load to that different file, and any other mutation
must be rejected; a silent change (loading to records the text does not say) fails the test, and so does
rejecting a valid file. The reference itself must agree with the reader on the original input (checked first).
Mutations known to be neutral (a byte-order mark, CRLF line ends, a blank line, columns swapped consistently in
every row) must load to the original records exactly.

Every test is seeded (``derandomize=True``), runs ``N_EXAMPLES`` examples, keeps no example database, and reuses
one temporary folder, rewriting one file per example.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nucls_utils import io as nio
from nucls_utils import taxonomy as tx

N_EXAMPLES = 2000
FUZZ = settings(derandomize=True, max_examples=N_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SHAPE = (80, 100)  # (height, width) of the image the single-rater CSV belongs to
TOL = 1
COLUMNS = ("raw_classification", "main_classification", "super_classification", "type",
           "xmin", "ymin", "xmax", "ymax", "coords_x", "coords_y")
NUCLEI = (
    nio.Nucleus.from_box("tumor", 10, 12, 30, 40),
    nio.Nucleus.from_polygon("lymphocyte", (50, 60, 58, 49), (20, 22, 35, 30)),
    nio.Nucleus.from_box("correction_fibroblast", 70, 5, 99, 25),
    nio.Nucleus("apoptotic_body", "other_nucleus", "other_nucleus", "rectangle", 0, 60, 8, 80,
                (0, 8, 8, 0, 0), (60, 60, 80, 80, 60)),  # a release alias; a box touching two image edges
)
FOV_A = "TCGA-A1-A0SP-DX1_id-5ea4095addda5f8398977ebc_left-9613_top-57046_bottom-57321_right-9871"
FOV_B = "TCGA-BH-A0BL-DX1_id-5ea40977ddda5f839897c4d8_left-30579_top-43586_bottom-43897_right-30859"


# ==============================================================================================================
# The independent reference
# ==============================================================================================================
_ASCII_INT = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
_CANONICAL = re.compile(r"0|-?[1-9][0-9]*")


def ref_int(text: str) -> int | None:
    t = text.strip()
    if not _ASCII_INT.fullmatch(t):
        return None
    return int(t.split(".")[0])


def ref_csv(data: bytes) -> tuple[nio.Nucleus, ...] | None:
    """What a per-FOV CSV says, by the documented rules; None when its text breaks them (no semantic checks)."""
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    try:
        text = data.decode("utf-8")
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    while records and records[0] == []:
        records.pop(0)  # blank lines before the header
    if not records or any(records[0].count(c) != 1 for c in COLUMNS):
        return None
    header = records[0]
    pos = {c: header.index(c) for c in COLUMNS}
    out = []
    for rec in records[1:]:
        if rec == []:
            continue  # a blank line
        if len(rec) != len(header):
            return None
        ints = [ref_int(rec[pos[c]]) for c in ("xmin", "ymin", "xmax", "ymax")]
        cx = [ref_int(v) for v in rec[pos["coords_x"]].split(",")]
        cy = [ref_int(v) for v in rec[pos["coords_y"]].split(",")]
        if None in ints or None in cx or None in cy:
            return None
        out.append(nio.Nucleus(rec[pos["raw_classification"]].strip(), rec[pos["main_classification"]].strip(),
                               rec[pos["super_classification"]].strip(), rec[pos["type"]].strip(), *ints,
                               tuple(cx), tuple(cy)))
    return tuple(out)


def ref_violation(nuclei: tuple[nio.Nucleus, ...], shape: tuple[int, int] | None) -> str | None:
    """The first rule a parsed file breaks (classes, geometry, duplicates), or None when it is valid."""
    seen = set()
    for n in nuclei:
        bare = n.raw_classification.removeprefix("correction_")
        if bare not in tx.RAW_TO_MAIN:
            return "raw class"
        alias = tx.RELEASE_CSV_ALIASES.get(bare, {})
        if n.main_classification not in {tx.RAW_TO_MAIN[bare], alias.get("main")}:
            return "main class"
        if n.super_classification not in {tx.RAW_TO_SUPER[bare], alias.get("super")}:
            return "super class"
        if n.type not in ("rectangle", "polyline", "point"):
            return "type"
        if n.xmax < n.xmin or n.ymax < n.ymin:
            return "inverted box"
        if len(n.coords_x) != len(n.coords_y) or (n.type == "polyline" and len(n.coords_x) < 3):
            return "coordinates"
        extent = (min(n.coords_x), min(n.coords_y), max(n.coords_x), max(n.coords_y))
        if any(abs(a - b) > TOL for a, b in zip((n.xmin, n.ymin, n.xmax, n.ymax), extent, strict=True)):
            return "box vs boundary"
        if shape is not None:
            h, w = shape
            if not all(-TOL <= v <= w + TOL for v in (n.xmin, n.xmax)) or not all(
                    -TOL <= v <= h + TOL for v in (n.ymin, n.ymax)):
                return "outside the image"
        key = (n.raw_classification, n.type, n.xmin, n.ymin, n.xmax, n.ymax, n.coords_x, n.coords_y)
        if key in seen:
            return "duplicate"
        seen.add(key)
    return None


def ref_name(name: str) -> nio.FovName | None:
    """A FOV name by the documented grammar, parsed by splitting; None when it breaks the grammar."""
    stem = name.rsplit("/", 1)[-1]
    if stem.endswith((".png", ".csv")):
        stem = stem[:-4]
    participant = evalset = None
    if "#" in stem:
        parts = stem.split("_#_")
        if len(parts) != 3 or any("#" in p for p in parts):
            return None
        participant, evalset, stem = parts
        if participant.strip() == "" or evalset.strip() == "":
            return None
    nums = []
    for key in ("_right-", "_bottom-", "_top-", "_left-"):
        if key not in stem:
            return None
        stem, num = stem.rsplit(key, 1)
        if not _CANONICAL.fullmatch(num):
            return None
        nums.append(int(num))
    if "_id-" not in stem:
        return None
    slide, item = stem.rsplit("_id-", 1)
    right, bottom, top, left = nums
    if not slide.strip() or not item or "_" in item or right <= left or bottom <= top:
        return None
    return nio.FovName(slide, item, left, top, bottom, right, participant, evalset)


# ==============================================================================================================
# Mutations of bytes (CSV files) and of strings (names)
# ==============================================================================================================
INSERTS = [b",", b'"', b"\n", b"\r", b"\r\n", b" ", b"\t", b"-", b"+", b".", b"0", b"7", b"e", b"_", b"#",
           b"\xef\xbb\xbf", b"\xff", b"\xc3", "\u00e9".encode(), "\u0661".encode(), b"\x00", b",,", b'""', b".0"]
NEUTRAL = {"bom", "crlf", "blank_line", "swap_columns_all"}

_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(INSERTS)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 6)),
    st.tuples(st.just("dup_line"), st.integers(0, 10**6)),
    st.tuples(st.just("del_line"), st.integers(0, 10**6)),
    st.tuples(st.just("swap_lines"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("swap_columns_all"), st.integers(0, 10), st.integers(0, 10)),
    st.tuples(st.just("swap_columns_data"), st.integers(0, 10), st.integers(0, 10)),
    st.tuples(st.just("number"), st.integers(0, 10**6),
              st.one_of(st.integers(-3, 110).map(str), st.sampled_from(["007", "-0", "1e1", "12.0", "12.5", "", " 5 ",
                                                                        "\u0661\u0662", "1_0", "9" * 30]))),
    st.tuples(st.just("class"), st.integers(0, 10**6), st.sampled_from(tx.RAW_CLASSES + ("correction_tumor", "Tumor",
                                                                                       "tumour", "AMBIGUOUS"))),
    st.tuples(st.just("shift_row"), st.integers(0, 10), st.sampled_from([-100, -20, -11, -2, 0, 1, 2, 30, 100]),
              st.sampled_from([-50, -1, 0, 1, 7, 45])),
    st.tuples(st.just("bom")),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("blank_line"), st.integers(0, 10**6)),
)
mutations = st.lists(_op, min_size=1, max_size=3)


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _swap_columns(data: bytes, i: int, j: int, *, header: bool) -> bytes:
    """Swap columns i and j of every record (or of the data records only), re-written by the csv module."""
    bom = data[:3] == b"\xef\xbb\xbf"
    try:
        records = list(csv.reader(io.StringIO(data[3 if bom else 0:].decode("utf-8"), newline=""), strict=True))
    except (UnicodeDecodeError, csv.Error):
        return data
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for k, rec in enumerate(records):
        if (k > 0 or header) and i < len(rec) and j < len(rec):
            rec[i], rec[j] = rec[j], rec[i]
        w.writerow(rec)
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")


def _shift_row(data: bytes, k: int, dx: int, dy: int) -> bytes:
    """Move data row k by (dx, dy): its box and boundary together (a valid different nucleus, or one outside the
    image); the file is re-written by the csv module. No-op when the text is not a CSV with the usual header."""
    bom = data[:3] == b"\xef\xbb\xbf"
    try:
        records = list(csv.reader(io.StringIO(data[3 if bom else 0:].decode("utf-8"), newline=""), strict=True))
        header = records[0]
        pos = {c: header.index(c) for c in COLUMNS}
        rec = records[1 + k % (len(records) - 1)]
        for cols, d in ((("xmin", "xmax"), dx), (("ymin", "ymax"), dy)):
            for c in cols:
                rec[pos[c]] = str(int(rec[pos[c]]) + d)
        for c, d in (("coords_x", dx), ("coords_y", dy)):
            rec[pos[c]] = ",".join(str(int(v) + d) for v in rec[pos[c]].split(","))
    except (UnicodeDecodeError, csv.Error, IndexError, ValueError, ZeroDivisionError):
        return data
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(records)
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")


def mutate(data: bytes, ops: list[tuple]) -> tuple[bytes, bool]:
    """Apply the operations in turn; returns the bytes and whether every operation was a neutral one."""
    neutral = True
    for op in ops:
        kind, *a = op
        neutral = neutral and kind in NEUTRAL
        n = len(data)
        lines = _lines(data)
        if kind == "flip" and n:
            p = a[0] % n
            data = data[:p] + bytes([data[p] ^ a[1]]) + data[p + 1:]
        elif kind == "truncate":
            data = data[:a[0] % (n + 1)]
        elif kind == "insert":
            p = a[0] % (n + 1)
            data = data[:p] + a[1] + data[p:]
        elif kind == "delete" and n:
            p = a[0] % n
            data = data[:p] + data[p + a[1]:]
        elif kind == "dup_line" and lines:
            k = a[0] % len(lines)
            ended = lines[k] if lines[k].endswith((b"\n", b"\r")) else lines[k] + b"\n"
            data = b"".join(lines[:k] + [ended, lines[k]] + lines[k + 1:])
        elif kind == "del_line" and lines:
            k = a[0] % len(lines)
            data = b"".join(lines[:k] + lines[k + 1:])
        elif kind == "swap_lines" and len(lines) > 1:
            k, m = a[0] % len(lines), a[1] % len(lines)
            lines = [x if x.endswith((b"\n", b"\r")) else x + b"\n" for x in lines]
            lines[k], lines[m] = lines[m], lines[k]
            data = b"".join(lines)
        elif kind in ("swap_columns_all", "swap_columns_data"):
            data = _swap_columns(data, a[0], a[1], header=kind == "swap_columns_all")
        elif kind == "shift_row":
            data = _shift_row(data, *a)
        elif kind == "number":
            spans = [m.span() for m in re.finditer(rb"[0-9]+", data)]
            if spans:
                s, e = spans[a[0] % len(spans)]
                data = data[:s] + a[1].encode() + data[e:]
        elif kind == "class":
            spans = [m.span() for m in re.finditer(rb"[A-Za-z_]+", data)]
            if spans:
                s, e = spans[a[0] % len(spans)]
                data = data[:s] + a[1].encode() + data[e:]
        elif kind == "bom" and data[:3] != b"\xef\xbb\xbf":  # (a second BOM is text: see the inserts)
            data = b"\xef\xbb\xbf" + data
        elif kind == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif kind == "blank_line":
            ends = [0] + [m.end() for m in re.finditer(rb"\n", data)]
            p = ends[a[0] % len(ends)]
            data = data[:p] + b"\n" + data[p:]
    return data, neutral


NAME_INSERTS = ["#", "_#_", "_", "-", "0", "5", ".", " ", "\n", "\u0661", "x", "_id-", "_left-", "_right-", ".png",
                ".csv", "/", "\t", "-0", "00"]
_name_op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(NAME_INSERTS)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 4)),
    st.tuples(st.just("replace"), st.integers(0, 10**6), st.sampled_from(NAME_INSERTS)),
    st.tuples(st.just("number"), st.integers(0, 10**6),
              st.one_of(st.integers(-10, 10**6).map(str), st.sampled_from(["007", "-0", "+5", "", "1_0"]))),
    st.tuples(st.just("swap_tokens"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("dup_token"), st.integers(0, 10**6)),
)
name_mutations = st.lists(_name_op, min_size=1, max_size=3)


def mutate_name(name: str, ops: list[tuple]) -> str:
    for kind, *a in ops:
        n = len(name)
        if kind == "insert":
            p = a[0] % (n + 1)
            name = name[:p] + a[1] + name[p:]
        elif kind == "delete" and n:
            p = a[0] % n
            name = name[:p] + name[p + a[1]:]
        elif kind == "replace" and n:
            p = a[0] % n
            name = name[:p] + a[1] + name[p + 1:]
        elif kind == "number":
            spans = [m.span() for m in re.finditer(r"[0-9]+", name)]
            if spans:
                s, e = spans[a[0] % len(spans)]
                name = name[:s] + a[1] + name[e:]
        elif kind in ("swap_tokens", "dup_token"):
            tokens = name.split("_")
            k = a[0] % len(tokens)
            if kind == "dup_token":
                tokens.insert(k, tokens[k])
            else:
                m = a[1] % len(tokens)
                tokens[k], tokens[m] = tokens[m], tokens[k]
            name = "_".join(tokens)
    return name


# ==============================================================================================================
# 1. The single-rater CSV reader
# ==============================================================================================================
@pytest.fixture(scope="module")
def csv_case(tmp_path_factory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("fuzz_csv") / f"{FOV_A}.csv"
    nio.write_fov_csv(NUCLEI, path)
    original = path.read_bytes()
    # the reader and the reference agree on the original, and it is valid
    assert nio.read_fov_csv(path, image_shape=SHAPE) == NUCLEI == ref_csv(original)
    assert ref_violation(NUCLEI, SHAPE) is None
    return path, original


def check_csv(path: Path, data: bytes, neutral: bool) -> None:
    path.write_bytes(data)
    expected = ref_csv(data)
    valid = expected is not None and ref_violation(expected, SHAPE) is None
    try:
        got = nio.read_fov_csv(path, image_shape=SHAPE, tolerance_px=TOL)
    except nio.NuclsFormatError as e:
        assert e.path == str(path) and str(e).startswith(str(path)), str(e)
        assert not valid, f"rejected a valid file ({e}): {data!r}"
        assert not neutral, f"a neutral mutation was rejected ({e}): {data!r}"
        return
    assert valid, f"accepted a file the reference rejects: {data!r}"
    assert got == expected, f"loaded to other records than the text says: {data!r}"
    if neutral:
        assert got == NUCLEI


@FUZZ
@given(ops=mutations)
def test_fuzz_read_fov_csv(csv_case, ops):
    """Mutated per-FOV CSVs load to what the reference parse says, or raise NuclsFormatError naming the file."""
    path, original = csv_case
    data, neutral = mutate(original, ops)
    check_csv(path, data, neutral)


def test_fuzz_reference_catches_silent_changes(csv_case):
    """The property has teeth: a reader that ignored the duplicate rule, or shifted a box, would fail it."""
    path, original = csv_case
    dup = original + original.splitlines(keepends=True)[1]
    path.write_bytes(dup)
    assert ref_violation(ref_csv(dup), SHAPE) == "duplicate"
    with pytest.raises(nio.NuclsFormatError, match="duplicates row 0"):
        nio.read_fov_csv(path, image_shape=SHAPE)
    moved = original.replace(b"rectangle,10,12,30,40", b"rectangle,11,12,30,40")  # still within 1 px: valid
    check_csv(path, moved, neutral=False)
    assert nio.read_fov_csv(path, image_shape=SHAPE)[0].xmin == 11


# ==============================================================================================================
# 2. The FOV-name parser
# ==============================================================================================================
BASE_NAMES = [
    FOV_A,
    f"NP.12_#_E_#_{FOV_A}",
    f"SP.3_#_U-control_#_{FOV_B}.csv",
    "rgb/TCGA-OL-A5RU-DX1_id-abc123_left--5_top-0_bottom-300_right-310.png",
]


@FUZZ
@given(base=st.sampled_from(BASE_NAMES), ops=name_mutations)
def test_fuzz_parse_fov_name(base, ops):
    """A mutated name parses exactly as the splitting reference says (both ways), and formats back to its stem;
    otherwise NuclsFormatError naming the name as given."""
    assert nio.parse_fov_name(base) == ref_name(base) is not None
    name = mutate_name(base, ops)
    expected = ref_name(name)
    try:
        got = nio.parse_fov_name(name)
    except nio.NuclsFormatError as e:
        assert e.path == name and str(e).startswith(name), str(e)
        assert expected is None, f"rejected a valid name {name!r}: {e}"
        return
    assert expected is not None, f"accepted a name the grammar rejects: {name!r}"
    assert got == expected
    stem = name.rsplit("/", 1)[-1]
    stem = stem[:-4] if stem.endswith((".png", ".csv")) else stem
    assert nio.format_fov_name(got) == stem  # canonical: nothing of the name is dropped or re-spelled


# ==============================================================================================================
# 3. The multi-rater reader
# ==============================================================================================================
MR_KEYS = [("E", "NP.1", FOV_A), ("E", "NP.2", FOV_A), ("E", "NP.1", FOV_B), ("U-control", "NP.1", FOV_A)]


@pytest.fixture(scope="module")
def mr_case(tmp_path_factory) -> tuple[Path, dict, dict]:
    tmp = tmp_path_factory.mktemp("fuzz_mr")
    png = tmp / "a.png"
    Image.fromarray(np.full(SHAPE + (3,), 200, np.uint8)).save(png)
    ann = {MR_KEYS[0]: NUCLEI[:3], MR_KEYS[1]: NUCLEI[2:], MR_KEYS[2]: NUCLEI[1:3], MR_KEYS[3]: ()}
    root = tmp / "mr"
    nio.write_multirater(ann, root, {FOV_A: png})  # FOV A has its image in every set, FOV B has none
    (root / "fovs.csv").write_text("fovname\nnot an annotation file\n")  # ignored: no '#' in its name
    files = {k: root / k[0] / "raw" / "csv" / f"{k[1]}_#_{k[0]}_#_{k[2]}.csv" for k in MR_KEYS}
    originals = {k: p.read_bytes() for k, p in files.items()}
    shapes = {FOV_A: SHAPE}
    assert nio.read_multirater(root) == ann == ref_multirater(root, shapes)
    return root, files, originals


def ref_multirater(root: Path, shapes: dict[str, tuple[int, int]]) -> dict | None:
    """The reference reading of a multi-rater folder: every '#'-named *.csv file is an annotation file whose name
    must parse and whose content must be valid, against its FOV's image (``<set>/rgb/<fov>.png`` beside
    ``<set>/raw/csv/``) when that exists; None when anything breaks the rules."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if not (name.endswith(".csv") and "#" in name):
                continue
            fov = ref_name(name)
            if fov is None:
                return None
            base = name[:-4].split("_#_")[2]
            key = (fov.evalset, fov.participant, base)
            nuclei = ref_csv((Path(folder) / name).read_bytes())
            image = Path(folder).parent.parent / "rgb" / f"{base}.png"
            shape = shapes.get(base) if image.is_file() else None
            if key in out or nuclei is None or ref_violation(nuclei, shape) is not None:
                return None
            out[key] = nuclei
    return out


@FUZZ
@given(target=st.integers(0, len(MR_KEYS) - 1), content=st.one_of(st.none(), mutations),
       rename=st.one_of(st.none(), name_mutations))
def test_fuzz_read_multirater(mr_case, target, content, rename):
    """One file of a small multi-rater folder gets its content and/or its name mutated: the folder reads to what
    the reference reading says, or raises NuclsFormatError naming the mutated file."""
    root, files, originals = mr_case
    key = MR_KEYS[target]
    path = files[key]
    data, neutral = mutate(originals[key], content) if content else (originals[key], True)
    new = path
    if rename:
        name = mutate_name(path.name, rename)
        if name and "/" not in name and "\x00" not in name and name not in (".", "..") and len(
                name.encode()) <= 255 and not (path.parent / name).exists():
            new = path.with_name(name)
    try:
        path.write_bytes(data)
        path.rename(new)
        expected = ref_multirater(root, {FOV_A: SHAPE})
        try:
            got = nio.read_multirater(root)
        except nio.NuclsFormatError as e:
            assert str(new) in str(e), str(e)
            assert expected is None, f"rejected a valid folder ({e}): {new.name!r}, {data!r}"
            assert not (neutral and new == path), f"a neutral mutation was rejected ({e})"
            return
        assert expected is not None, f"accepted what the reference rejects: {new.name!r}, {data!r}"
        assert got == expected
        if neutral and new == path:
            assert got == {k: tuple(v) for k, v in zip(MR_KEYS, (NUCLEI[:3], NUCLEI[2:], NUCLEI[1:3], ()),
                                                          strict=True)}
    finally:
        if new.exists():
            new.rename(path)
        path.write_bytes(originals[key])
