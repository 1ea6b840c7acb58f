"""Every figure of the study, in one place, one module per part of the paper:

- :mod:`.style`: the plotting style (:func:`set_style`);
- :mod:`.dataset`: the dataset (notebook 01: Figs. 1a, 6c, S9, example FOVs, realism of the synthetic cohort);
- :mod:`.suggestions`: the algorithmic suggestions (notebook 02: Figs. S2, S4);
- :mod:`.agreement`: the inter-rater analyses (notebooks 03 and 04: Figs. 2, 3, 4, 5, S3, S5, S7, S8, S16);
- :mod:`.model`: the NuCLS model (notebooks 05 and 06: Figs. 6d, S10, S11);
- :mod:`.dtale`: DTALE (notebook 07: Figs. 7b-g, S14, S15).

Each figure's builder takes computed results (tables, arrays, a fitted tree) and returns a matplotlib Figure; the
registry :mod:`nucls_utils.figures` names the builder of every figure and writes it
(:func:`nucls_utils.figures.save_figure`, which this package does not import), and class colours come from one source,
:func:`nucls_utils.taxonomy.class_color`. A module is imported when a figure needs it, so importing this package
costs only matplotlib.
"""

from __future__ import annotations

from .style import set_style

__all__ = ["set_style"]
