"""``python -m nucls_utils.wsi``: the NuCLS model on whole slides (see :mod:`nucls_utils.wsi`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory with model.pt (notebook 05: results/<data>/"
                   "05_training/models/config3_fold1); with --mode tile-mask, the tile classifier's .pt file")
    p.add_argument("--out", required=True, help="output folder (created; tiles are kept there for resumption)")
    p.add_argument("--mode", choices=("nuclei", "tile-mask"), default="nuclei",
                   help="nuclei (default): the NuCLS model's nuclei; tile-mask: the seed-002 tile classifier's "
                        "binary nuclei mask as a pyramidal TIFF")
    p.add_argument("--mpp", type=float, default=None, help="microns per level-0 pixel, when the slide's metadata "
                   "lack it or are wrong")
    p.add_argument("--reader", choices=("auto", "openslide", "tifffile"), default="auto")
    p.add_argument("--tile", type=int, default=512, help="tile side in model pixels (0.2 um/px; default 512)")
    p.add_argument("--overlap", type=int, default=96, help="tile overlap in model pixels (default 96)")
    p.add_argument("--tissue", choices=("otsu", "histomicstk"), default="otsu", help="tissue detection")
    p.add_argument("--min-tissue", type=float, default=0.05, help="skip tiles with less tissue than this share")
    p.add_argument("--no-normalise", action="store_true", help="do not Macenko-normalise the tiles")
    p.add_argument("--workers", type=int, default=1, help="local Dask worker processes (default 1; 0: no Dask, "
                   "everything in this process)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (tcp://host:8786) "
                   "instead of a local cluster; its workers must see the slide, model and output paths")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--overwrite", action="store_true", help="start over when the output folder holds another run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args):
    from .predict import WsiConfig

    return WsiConfig(tile=args.tile, overlap=args.overlap, tissue_method=args.tissue, min_tissue=args.min_tissue,
                     normalise=not args.no_normalise)


def _threads(args) -> int | None:
    from .cluster import default_threads

    if args.threads is not None:
        return args.threads
    return default_threads(max(args.workers, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nucls_utils.wsi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_one = sub.add_parser("predict", help="predict every nucleus of one slide")
    p_one.add_argument("slide")
    _add_common(p_one)
    p_many = sub.add_parser("predict-cohort", help="predict several slides on one cluster (OUT/<slide name>/)")
    p_many.add_argument("slides", nargs="+")
    _add_common(p_many)
    p_syn = sub.add_parser("synthetic-slide", help="write the phantom's synthetic slide and its truth")
    p_syn.add_argument("out", help="the slide's path (.tif); its truth goes beside it")
    p_syn.add_argument("--profile", choices=("smoke", "cpu", "paper"), default="cpu")
    p_syn.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .predict import RunMismatch
    from .reader import SlideError

    try:
        if args.command == "synthetic-slide":
            from ..phantom.slide import ensure_slide

            path = ensure_slide(args.out, args.profile, args.seed)
            print(f"synthetic slide: {path} (truth: {path.with_suffix('.truth.parquet').name})")
            return 0
        slides = [args.slide] if args.command == "predict" else args.slides
        if args.mode == "tile-mask":
            from .tilemask import predict_tile_mask

            for slide in slides:
                out = Path(args.out) if len(slides) == 1 else Path(args.out) / Path(slide).stem
                res = predict_tile_mask(slide, args.model, out, mpp=args.mpp, reader=args.reader,
                                        min_tissue=args.min_tissue, tissue_method=args.tissue,
                                        progress=not args.quiet, overwrite=args.overwrite)
                print(f"{Path(slide).name}: nuclei mask {res['mask']} ({res['nucleus_share']:.1%} of the pixels of the {res['blocks']} tissue blocks)")
            return 0
        from .export import format_summary
        from .predict import predict_cohort, predict_slide

        common = dict(workers=args.workers, threads=_threads(args), scheduler=args.scheduler, device=args.device,
                      overwrite=args.overwrite, progress=not args.quiet)
        if args.command == "predict":
            summaries = [predict_slide(args.slide, args.model, args.out, _config(args), mpp=args.mpp,
                                       reader=args.reader, **common)]
        else:
            summaries = predict_cohort(args.slides, args.model, args.out, _config(args), mpp=args.mpp,
                                       reader=args.reader, **common)
        for s in summaries:
            print(format_summary(s))
            print(f"  outputs: {s['out_dir']}")
        return 0
    except (SlideError, RunMismatch, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
