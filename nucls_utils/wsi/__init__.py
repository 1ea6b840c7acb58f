"""The NuCLS model on whole slides: reading, tissue, tiled prediction on one machine or a Dask cluster, and outputs
that QuPath and HistomicsUI open.

Command line (``python -m nucls_utils.wsi --help``)::

    python -m nucls_utils.wsi predict SLIDE --model DIR --out DIR [--workers N | --scheduler ADDRESS]
    python -m nucls_utils.wsi predict-cohort SLIDE [SLIDE ...] --model DIR --out DIR
    python -m nucls_utils.wsi synthetic-slide OUT.tif --profile cpu

Modules: :mod:`.reader` (OpenSlide and tifffile, microns per pixel), :mod:`.tissue` (tissue masks),
:mod:`.predict` (tiles, resumption, the merge), :mod:`.export` (parquet, GeoJSON, DSA, heatmap, summary),
:mod:`.cluster` (Dask), :mod:`.tilemask` (the seed-002 tile classifier's nuclei mask as a pyramidal TIFF).
"""

from .export import format_summary, read_geojson
from .predict import WsiConfig, plan_slide, predict_slide
from .reader import SlideError, open_slide

__all__ = ["WsiConfig", "plan_slide", "predict_slide", "format_summary", "read_geojson", "SlideError", "open_slide"]
