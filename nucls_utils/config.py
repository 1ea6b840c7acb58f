"""Paths, data modes, compute profiles and the run manifest.

Every notebook starts with :func:`start_run`, which resolves the data mode and profile, prints the run header
(profile, device, package versions, git commit) and writes ``run_manifest.json`` next to the stage's outputs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from . import profiles

__all__ = ["REPO_ROOT", "MICRONS_PER_PIXEL", "Profile", "PROFILES", "get_profile", "DataSource", "resolve_data",
           "synthetic_dir", "find_real_sample", "SHARED_DATA",
           "RunContext", "start_run", "package_versions", "git_commit"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Resolution of every NuCLS image and coordinate (microns per pixel).
MICRONS_PER_PIXEL = 0.2


@dataclass(frozen=True)
class Profile:
    """A compute budget: its name, what it is for, and the notebooks' numbers (``settings``). Every stage's settings
    are declared in :mod:`nucls_utils.profiles`."""

    name: str
    description: str
    expects_gpu: bool
    settings: profiles.StudySettings


PROFILES: dict[str, Profile] = {
    p: Profile(p, profiles.DESCRIPTIONS[p], p in profiles.EXPECTS_GPU, profiles.settings(p))
    for p in profiles.PROFILE_NAMES
}


def get_profile(name: str) -> Profile:
    """The :class:`Profile` called ``name``."""
    return PROFILES[profiles.check_profile(name)]


@dataclass(frozen=True)
class DataSource:
    """Where a run's data comes from.

    ``mode`` is ``'nucls'`` (a dataset in the official layout at ``path``) or ``'synthetic'`` (the embedded
    cohort). ``name`` keys the results folder: ``results/<name>/<stage>/``.
    """

    mode: str
    path: Path | None
    name: str


def synthetic_dir(profile: str) -> Path:
    """Where the synthetic cohort of a profile is cached: ``<repo>/data/synthetic/<profile>``."""
    return REPO_ROOT / "data" / "synthetic" / profile


def resolve_data(data_dir: str | os.PathLike[str] | None, profile: str = "cpu", seed: int = 0) -> DataSource:
    """Resolve the ``data_dir`` notebook parameter.

    An empty value selects the synthetic cohort of ``profile``: it is generated (or reused when up to date) under
    :func:`synthetic_dir`. A folder holding a phantom ``manifest.json`` is a synthetic cohort too; any other folder
    is a dataset in the official NuCLS layout.
    """
    from .phantom import ensure_cohort, read_manifest

    if data_dir in (None, ""):
        path, _ = ensure_cohort(synthetic_dir(profile), profile, seed)
        return DataSource("synthetic", path.resolve(), f"synthetic_{profile}")
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data_dir {path} does not exist or is not a folder")
    manifest = read_manifest(path)
    if manifest is not None and manifest.get("generator") == "nucls_utils.phantom":
        return DataSource("synthetic", path, f"synthetic_{manifest['profile']}")
    return DataSource("nucls", path, path.name)


#: The project's small real NuCLS piece, beside the repository (absent on most machines).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def find_real_sample(spec: str | None) -> Path | None:
    """Resolve a ``real_sample_dir`` parameter: the small real NuCLS sample used for side-by-side comparisons.

    ``'none'`` -> ``None``; ``'auto'``/empty -> ``<repo>/../shared/data/nucls_sample`` when it exists, else ``None``;
    anything else must be an existing folder.
    """
    if spec is not None and spec.strip().lower() == "none":
        return None
    if spec in (None, "", "auto"):
        candidate = SHARED_DATA / "nucls_sample"
        return candidate.resolve() if (candidate / "csv").is_dir() else None
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"real_sample_dir {path} is not a folder")
    return path.resolve()


def package_versions() -> dict[str, str]:
    """Versions of the packages the study depends on (those installed)."""
    names = ["numpy", "scipy", "pandas", "scikit-image", "scikit-learn", "torch", "torchvision", "histomicstk",
             "matplotlib", "seaborn", "umap-learn", "krippendorff", "papermill"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checked-out commit (with ``-dirty`` when the tree has changes), or ``'unknown'``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda ({torch.cuda.get_device_name(0)})"
    except Exception:  # noqa: BLE001 - torch missing or broken: report CPU
        pass
    return f"cpu ({os.cpu_count()} cores)"


@dataclass
class RunContext:
    """Resolved settings of one notebook run; ``stage_dir`` is where its tidy tables go."""

    stage: str
    profile: Profile
    seed: int
    data: DataSource
    results_dir: Path
    figures_dir: Path
    tables_dir: Path
    stage_dir: Path
    device: str
    commit: str
    versions: dict

    @property
    def settings(self) -> profiles.StudySettings:
        """The profile's notebook numbers (:class:`nucls_utils.profiles.StudySettings`)."""
        return self.profile.settings

    def manifest(self) -> dict:
        d = asdict(self)
        for k in ("results_dir", "figures_dir", "tables_dir", "stage_dir"):
            d[k] = str(d[k])
        d["data"] = {"mode": self.data.mode, "path": str(self.data.path), "name": self.data.name}
        return d


def start_run(stage: str, *, data_dir: str | None, profile: str, seed: int, results_dir: str | None = None,
              figures_dir: str | None = None, tables_dir: str | None = None, verbose: bool = True) -> RunContext:
    """Resolve a notebook's parameters, create its output folders, print and save the run header."""
    prof = get_profile(profile)
    data = resolve_data(data_dir, profile, int(seed))
    results = Path(results_dir) if results_dir else REPO_ROOT / "results"
    figures = Path(figures_dir) if figures_dir else REPO_ROOT / "figures"
    tables = Path(tables_dir) if tables_dir else REPO_ROOT / "tables"
    stage_dir = results / data.name / stage
    for d in (stage_dir, figures, tables):
        d.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(stage, prof, int(seed), data, results, figures, tables, stage_dir, _device(), git_commit(),
                     package_versions())
    (stage_dir / "run_manifest.json").write_text(json.dumps(ctx.manifest(), indent=2, default=str))
    if verbose:
        print(f"stage    : {stage}")
        print(f"profile  : {prof.name} ({prof.description})")
        print(f"data     : {data.mode} - {data.path}")
        print(f"seed     : {seed}")
        print(f"device   : {ctx.device}")
        print(f"commit   : {ctx.commit}")
        print("versions : " + ", ".join(f"{k} {v}" for k, v in ctx.versions.items()))
        print(f"outputs  : {stage_dir} | {figures} | {tables}")
        if prof.expects_gpu and not ctx.device.startswith("cuda"):
            print(f"warning  : profile {prof.name!r} is meant for a GPU but none is available", file=sys.stderr)
    return ctx
