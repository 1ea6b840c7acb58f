"""The embedded synthetic cohort: a calibrated H&E phantom with exact ground truth.

:func:`ensure_cohort` / :func:`generate_cohort` write hospitals -> slides -> ROIs -> FOVs in the official NuCLS
single-rater layout (see :mod:`.cohort`); :mod:`.calibration` holds the real-data numbers it is fitted to,
:mod:`.layout` the tissue regions and nucleus placement, :mod:`.morphology` the class shapes and :mod:`.render`
the Beer-Lambert H&E rendering. Command line: ``python -m nucls_utils.phantom --profile cpu --seed 0 --out DIR``.
"""

from .cohort import (
    GENERATOR_VERSION,
    PROFILE_SPECS,
    CohortSpec,
    cohort_is_current,
    cohort_problem,
    ensure_cohort,
    fov_region_map,
    generate_cohort,
    read_manifest,
)
from .layout import REGION_CODES, REGION_COLORS, REGION_NAMES

__all__ = ["GENERATOR_VERSION", "PROFILE_SPECS", "CohortSpec", "cohort_is_current", "cohort_problem", "ensure_cohort",
           "fov_region_map", "generate_cohort", "read_manifest", "REGION_CODES", "REGION_COLORS", "REGION_NAMES"]
