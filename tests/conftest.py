"""Shared fixtures. Real NuCLS data is read from ../shared/data/ (never copied into the repository); tests that
need it skip with a message when it is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NUCLS_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_DIR = SHARED_DATA / "nucls_sample"
METADATA = SHARED_DATA / "nucls_core_metadata.sqlite"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not (SAMPLE_DIR / "csv").is_dir():
        pytest.skip(f"real NuCLS sample not found at {SAMPLE_DIR} (../shared/data is absent)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def metadata_path() -> Path:
    if not METADATA.is_file():
        pytest.skip(f"core-set metadata not found at {METADATA} (../shared/data is absent)")
    return METADATA


@pytest.fixture()
def small_dataset(sample_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of three real FOVs (csv + rgb), for corrupting in bad-input tests."""
    root = tmp_path / "ds"
    (root / "csv").mkdir(parents=True)
    (root / "rgb").mkdir()
    for csv in sorted((sample_dir / "csv").glob("*.csv"))[:3]:
        shutil.copyfile(csv, root / "csv" / csv.name)
        shutil.copyfile(sample_dir / "rgb" / f"{csv.stem}.png", root / "rgb" / f"{csv.stem}.png")
    return root


@pytest.fixture(scope="session")
def smoke_cohort(tmp_path_factory) -> Path:
    """The smoke-profile synthetic cohort (seed 0), generated once per test session."""
    from nucls_utils.phantom import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("syn") / "smoke", "smoke", 0, progress=False)
