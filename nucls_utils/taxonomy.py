"""Nucleus classes of the NuCLS study and how they group.

Three levels (paper Fig. 2c; reference notes section 3):

* **raw** classes: the 13 labels participants could give (12 in the paper's count plus ``unlabeled``);
* **main** classes: 7 classes plus ``AMBIGUOUS`` (apoptotic bodies and unlabeled nuclei), used to train and
  evaluate the NuCLS model;
* **super** classes: ``tumor_any``, ``nonTIL_stromal``, ``sTIL``, ``other_nucleus`` plus ``AMBIGUOUS``.

A QC-corrected annotation carries a ``correction_`` prefix (``correction_tumor``) and maps like the class itself.
Probabilities of a coarser level are the sums of the probabilities of its children (:func:`group_probabilities`).

Participant groups: senior pathologists (SP), junior pathologists (JP) and non-pathologists (NP); ``Ps`` is
SP + JP. The groups come from the participant's alias prefix (``SP.1``, ``JP.4``, ``NP.12``), never from names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "RAW_CLASSES",
    "MAIN_CLASSES",
    "SUPER_CLASSES",
    "AMBIGUOUS",
    "CORRECTION_PREFIX",
    "RAW_TO_MAIN",
    "MAIN_TO_SUPER",
    "RAW_TO_SUPER",
    "RELEASE_CSV_ALIASES",
    "accepted_labels",
    "GT_CODES",
    "FOV_GT_CODE",
    "MAIN_CODES",
    "SUPER_CODES",
    "RAW_COLORS",
    "MAIN_COLORS",
    "SUPER_COLORS",
    "PARTICIPANT_GROUPS",
    "UnknownClassError",
    "strip_correction",
    "is_correction",
    "is_fov_group",
    "to_raw",
    "to_main",
    "to_super",
    "map_classes",
    "is_ambiguous",
    "gt_code",
    "class_from_gt_code",
    "group_probabilities",
    "participant_group",
    "is_pathologist",
    "members",
    "colors",
    "class_color",
    "NON_CLASS_COLORS",
]

AMBIGUOUS = "AMBIGUOUS"
CORRECTION_PREFIX = "correction_"

#: The raw classes, in GT-code order (code in :data:`GT_CODES`).
RAW_CLASSES: tuple[str, ...] = (
    "tumor",
    "fibroblast",
    "lymphocyte",
    "plasma_cell",
    "macrophage",
    "mitotic_figure",
    "vascular_endothelium",
    "myoepithelium",
    "apoptotic_body",
    "neutrophil",
    "ductal_epithelium",
    "eosinophil",
    "unlabeled",
)

#: Main classes in model-code order (code = position + 1; background is 0).
MAIN_CLASSES: tuple[str, ...] = (
    "tumor_nonMitotic",
    "tumor_mitotic",
    "nonTILnonMQ_stromal",
    "macrophage",
    "lymphocyte",
    "plasma_cell",
    "other_nucleus",
    AMBIGUOUS,
)

#: Super-classes in code order (code = position + 1).
SUPER_CLASSES: tuple[str, ...] = ("tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus", AMBIGUOUS)

RAW_TO_MAIN: dict[str, str] = {
    "tumor": "tumor_nonMitotic",
    "mitotic_figure": "tumor_mitotic",
    "fibroblast": "nonTILnonMQ_stromal",
    "vascular_endothelium": "nonTILnonMQ_stromal",
    "macrophage": "macrophage",
    "lymphocyte": "lymphocyte",
    "plasma_cell": "plasma_cell",
    "neutrophil": "other_nucleus",
    "eosinophil": "other_nucleus",
    "myoepithelium": "other_nucleus",
    "ductal_epithelium": "other_nucleus",
    "apoptotic_body": AMBIGUOUS,
    "unlabeled": AMBIGUOUS,
}

MAIN_TO_SUPER: dict[str, str] = {
    "tumor_nonMitotic": "tumor_any",
    "tumor_mitotic": "tumor_any",
    "nonTILnonMQ_stromal": "nonTIL_stromal",
    "macrophage": "nonTIL_stromal",
    "lymphocyte": "sTIL",
    "plasma_cell": "sTIL",
    "other_nucleus": "other_nucleus",
    AMBIGUOUS: AMBIGUOUS,
}

RAW_TO_SUPER: dict[str, str] = {raw: MAIN_TO_SUPER[main] for raw, main in RAW_TO_MAIN.items()}

#: Where the public release's CSVs label a raw class differently from the reference model code. The release
#: writes ``apoptotic_body`` with main and super class ``other_nucleus``; the model config (and Table 1, whose
#: detection N excludes apoptotic bodies) treats it as AMBIGUOUS. Readers accept both spellings and keep the
#: file's text; every analysis derives main/super classes from the raw class with :data:`RAW_TO_MAIN`.
RELEASE_CSV_ALIASES: dict[str, dict[str, str]] = {
    "apoptotic_body": {"main": "other_nucleus", "super": "other_nucleus"},
}

#: Ground-truth codes of the official mask PNGs (channel 0).
GT_CODES: dict[str, int] = {
    "tumor": 1,
    "fibroblast": 2,
    "lymphocyte": 3,
    "plasma_cell": 4,
    "macrophage": 5,
    "mitotic_figure": 6,
    "vascular_endothelium": 7,
    "myoepithelium": 8,
    "apoptotic_body": 9,
    "neutrophil": 10,
    "ductal_epithelium": 11,
    "eosinophil": 12,
    "unlabeled": 99,
}
#: Mask code of the field-of-view region (every ``fov_*`` group).
FOV_GT_CODE = 253

MAIN_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(MAIN_CLASSES)}
SUPER_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(SUPER_CLASSES)}

# One palette for every figure: tumor red, stroma yellow/orange, sTILs blue, other green, ambiguous grey.
RAW_COLORS: dict[str, str] = {
    "tumor": "#e41a1c",
    "mitotic_figure": "#8b0000",
    "fibroblast": "#f0c419",
    "vascular_endothelium": "#d98c1f",
    "macrophage": "#a65628",
    "lymphocyte": "#1f5fd1",
    "plasma_cell": "#41b6e6",
    "neutrophil": "#4daf4a",
    "eosinophil": "#8fd175",
    "myoepithelium": "#2e7d32",
    "ductal_epithelium": "#00897b",
    "apoptotic_body": "#7f7f7f",
    "unlabeled": "#bdbdbd",
}
MAIN_COLORS: dict[str, str] = {
    "tumor_nonMitotic": "#e41a1c",
    "tumor_mitotic": "#8b0000",
    "nonTILnonMQ_stromal": "#f0c419",
    "macrophage": "#a65628",
    "lymphocyte": "#1f5fd1",
    "plasma_cell": "#41b6e6",
    "other_nucleus": "#4daf4a",
    AMBIGUOUS: "#9e9e9e",
}
SUPER_COLORS: dict[str, str] = {
    "tumor_any": "#e41a1c",
    "nonTIL_stromal": "#f0c419",
    "sTIL": "#1f5fd1",
    "other_nucleus": "#4daf4a",
    AMBIGUOUS: "#9e9e9e",
}

#: Participant groups: the alias prefix and whether the group counts as pathologists (Ps = SP + JP).
PARTICIPANT_GROUPS: dict[str, dict[str, object]] = {
    "SP": {"description": "senior pathologist (attending, or resident with > 2 years of AP training)", "is_P": True},
    "JP": {"description": "junior pathologist (resident with < 2 years of AP training)", "is_P": True},
    "NP": {"description": "non-pathologist (medical student or graduate)", "is_P": False},
}

_LEVELS = {"raw": RAW_CLASSES, "main": MAIN_CLASSES, "super": SUPER_CLASSES}


class UnknownClassError(ValueError):
    """A class name that is not part of the NuCLS taxonomy."""


def is_correction(name: str) -> bool:
    """Whether ``name`` carries the QC ``correction_`` prefix."""
    return name.startswith(CORRECTION_PREFIX)


def strip_correction(name: str) -> str:
    """Drop the ``correction_`` prefix, if any (``correction_tumor`` -> ``tumor``)."""
    return name[len(CORRECTION_PREFIX):] if name.startswith(CORRECTION_PREFIX) else name


def is_fov_group(name: str) -> bool:
    """Whether an annotation group is a field-of-view outline (``fov_basic``, ``correction_FOV_reviewed`` ...)."""
    return "fov" in strip_correction(name).lower()


def to_raw(name: str) -> str:
    """Validate a raw class name (``correction_`` prefix allowed) and return the bare raw class.

    Raises
    ------
    UnknownClassError
        If the name is not one of the 13 raw classes.
    """
    bare = strip_correction(name)
    if bare not in RAW_TO_MAIN:
        raise UnknownClassError(f"unknown raw class {name!r}; expected one of {', '.join(RAW_CLASSES)}")
    return bare


def accepted_labels(raw: str, level: str) -> set[str]:
    """Main or super class spellings a CSV may carry for ``raw`` (taxonomy value plus release aliases)."""
    bare = to_raw(raw)
    value = RAW_TO_MAIN[bare] if level == "main" else RAW_TO_SUPER[bare]
    alias = RELEASE_CSV_ALIASES.get(bare, {}).get(level)
    return {value} | ({alias} if alias else set())


def to_main(name: str) -> str:
    """Map a raw class (or an already-main class) to its main class."""
    if name in MAIN_TO_SUPER:
        return name
    return RAW_TO_MAIN[to_raw(name)]


def to_super(name: str) -> str:
    """Map a raw, main or super class name to its super-class."""
    if name in SUPER_CODES:
        return name
    if name in MAIN_TO_SUPER:
        return MAIN_TO_SUPER[name]
    return RAW_TO_SUPER[to_raw(name)]


def map_classes(names: Iterable[str], level: str) -> list[str]:
    """Map raw class names to ``level`` (``'raw'``, ``'main'`` or ``'super'``)."""
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {sorted(_LEVELS)}, not {level!r}")
    fn = {"raw": to_raw, "main": to_main, "super": to_super}[level]
    return [fn(n) for n in names]


def is_ambiguous(name: str) -> bool:
    """Whether a raw/main/super class is AMBIGUOUS (apoptotic body, unlabeled)."""
    return to_super(name) == AMBIGUOUS


def gt_code(name: str) -> int:
    """Mask GT code of a raw class (``correction_`` allowed); FOV groups give :data:`FOV_GT_CODE`."""
    if is_fov_group(name):
        return FOV_GT_CODE
    return GT_CODES[to_raw(name)]


def class_from_gt_code(code: int) -> str:
    """Inverse of :func:`gt_code` for nuclei (253 -> ``'fov'``)."""
    if code == FOV_GT_CODE:
        return "fov"
    for name, c in GT_CODES.items():
        if c == code:
            return name
    raise UnknownClassError(f"unknown GT code {code}")


def group_probabilities(
    probs: np.ndarray, from_classes: Sequence[str], level: str
) -> tuple[np.ndarray, list[str]]:
    """Group class-probability vectors to a coarser level by summing children.

    Parameters
    ----------
    probs : (N, K) ndarray
        One probability vector per row over ``from_classes``.
    from_classes : sequence of str, length K
        Raw or main class names, in column order. Extra non-class columns such as ``'undetected'`` are kept
        as their own group.
    level : {'main', 'super'}

    Returns
    -------
    grouped : (N, G) ndarray
        Row sums are preserved.
    groups : list of str, length G
        The group of each column, in taxonomy order (then extra columns in input order).
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(from_classes):
        raise ValueError(f"probs must have shape (N, {len(from_classes)}), got {probs.shape}")
    if level not in ("main", "super"):
        raise ValueError(f"level must be 'main' or 'super', not {level!r}")
    target = MAIN_CLASSES if level == "main" else SUPER_CLASSES
    fn = to_main if level == "main" else to_super
    parents = []
    extras: list[str] = []
    for name in from_classes:
        try:
            parents.append(fn(name))
        except UnknownClassError:
            parents.append(name)  # e.g. 'undetected' stays a group of its own
            if name not in extras:
                extras.append(name)
    groups = [g for g in target if g in parents] + extras
    index = {g: i for i, g in enumerate(groups)}
    onehot = np.zeros((len(from_classes), len(groups)))
    onehot[np.arange(len(from_classes)), [index[p] for p in parents]] = 1.0
    return probs @ onehot, groups


def participant_group(alias: str) -> str:
    """Group of a participant alias: ``'SP'``, ``'JP'`` or ``'NP'`` (``'SP.2'`` -> ``'SP'``)."""
    prefix = alias.split(".", 1)[0].upper()
    if prefix not in PARTICIPANT_GROUPS:
        raise ValueError(f"participant alias {alias!r} does not start with SP., JP. or NP.")
    return prefix


def is_pathologist(alias: str) -> bool:
    """Whether a participant belongs to Ps (SP or JP)."""
    return bool(PARTICIPANT_GROUPS[participant_group(alias)]["is_P"])


def members(aliases: Iterable[str], who: str) -> list[str]:
    """Aliases belonging to ``who`` in {'SP', 'JP', 'NP', 'Ps', 'All'}."""
    aliases = list(aliases)
    if who == "All":
        return aliases
    if who == "Ps":
        return [a for a in aliases if is_pathologist(a)]
    if who in PARTICIPANT_GROUPS:
        return [a for a in aliases if participant_group(a) == who]
    raise ValueError(f"who must be SP, JP, NP, Ps or All, not {who!r}")


def colors(level: str) -> Mapping[str, str]:
    """The colour map of a level."""
    return {"raw": RAW_COLORS, "main": MAIN_COLORS, "super": SUPER_COLORS}[level]


#: Colours of the inter-rater analyses' non-classes.
NON_CLASS_COLORS: dict[str, str] = {"undetected": "#bdbdbd", "non-existent": "#444444", "not a nucleus": "#bdbdbd"}


def class_color(name: object, default: str | None = "#777777") -> str | None:
    """The one colour of a class name at whatever level it belongs to (super, main or raw: a name shared by two
    levels has one colour in both), or of a non-class of the inter-rater analyses (``undetected``); ``default``
    for anything else. Every figure colours classes through this function."""
    if isinstance(name, str):
        for table in (SUPER_COLORS, MAIN_COLORS, RAW_COLORS, NON_CLASS_COLORS):
            if name in table:
                return table[name]
    return default
