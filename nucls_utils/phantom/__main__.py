"""``python -m nucls_utils.phantom --profile cpu --seed 0 --out data/synthetic/cpu [--force]``"""

from __future__ import annotations

import argparse
import sys
import time

from .cohort import PROFILE_SPECS, ensure_cohort, generate_cohort


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nucls_utils.phantom", description=__doc__)
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILE_SPECS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output folder (e.g. data/synthetic/cpu)")
    ap.add_argument("--force", action="store_true", help="regenerate even if an up-to-date cohort is there")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        if args.force:
            generate_cohort(args.out, args.profile, args.seed, overwrite=True)
            made = True
        else:
            _, made = ensure_cohort(args.out, args.profile, args.seed)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (Terminated): the temporary folder is already removed
        print(f"synthetic cohort: interrupted ({e or 'Ctrl-C'}); nothing was written to {args.out}", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"synthetic cohort: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    what = "generated" if made else "up to date, reused"
    print(f"synthetic cohort ({args.profile}, seed {args.seed}) {what}: {args.out} [{time.perf_counter() - t:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
