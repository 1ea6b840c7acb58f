"""Content manifests of generated artefacts: a sha256 per file, recorded when written, checked on reuse.

Every artefact that a later run reuses (the synthetic cohort, the simulated study, the refinement model, trained
models and their predictions) is a folder with a JSON manifest inside it. Besides the artefact's own description
(generator version, seed, configs, ...) the manifest holds ``"files": {relative/path: sha256}`` over every other
file in the folder. :func:`verify_manifest` recomputes the hashes and returns why the folder cannot be reused
(``None`` when it can), so a deleted PNG, a truncated CSV or one changed byte regenerates the artefact instead of
failing later with an unrelated error.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .atomic import atomic_path

__all__ = ["sha256_file", "hash_files", "write_manifest", "read_manifest_json", "files_problem", "verify_manifest"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _listed(root: Path, exclude: Iterable[str]) -> list[str]:
    skip = set(exclude)
    out = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        # hidden files are temporaries of atomic writes (".name.xxx.tmp"); they are never part of an artefact
        if rel in skip or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        out.append(rel)
    return sorted(out)


def hash_files(root: str | os.PathLike[str], *, exclude: Iterable[str] = ("manifest.json",)) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every (non-hidden) file below ``root``, sorted by path."""
    root = Path(root)
    return {rel: sha256_file(root / rel) for rel in _listed(root, exclude)}


def write_manifest(root: str | os.PathLike[str], meta: Mapping, *, name: str = "manifest.json",
                   exclude: Iterable[str] = (), files: Iterable[str] | None = None) -> dict:
    """Write ``root/name``: ``meta`` plus ``"files"`` (the sha256 of every other file below ``root``, or of just
    ``files``, relative paths, when given), atomically.

    Call it last, once every file of the artefact is in place. Returns the manifest written.
    """
    root = Path(root)
    manifest = dict(meta)
    if files is None:
        manifest["files"] = hash_files(root, exclude=(name, *exclude))
    else:
        manifest["files"] = {rel: sha256_file(root / rel) for rel in sorted(set(files))}
    with atomic_path(root / name) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return manifest


def read_manifest_json(path: str | os.PathLike[str]) -> dict | None:
    """A manifest file's content, or ``None`` when it is missing or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def files_problem(root: str | os.PathLike[str], files: Mapping[str, str]) -> str | None:
    """The first of ``files`` (``{relative path: sha256}`` below ``root``) that is missing or changed, as a
    one-line reason, or ``None`` when all are intact."""
    for rel, digest in sorted(files.items()):
        path = Path(root) / rel
        if not path.is_file():
            return f"file {rel!r} is missing"
        if sha256_file(path) != digest:
            return f"file {rel!r} changed since it was written (sha256 differs)"
    return None


def verify_manifest(root: str | os.PathLike[str], *, name: str = "manifest.json",
                    expect: Mapping | None = None, exclude: Iterable[str] = (),
                    allow_extra: bool = False) -> str | None:
    """Why ``root`` cannot be reused as the artefact its manifest describes, or ``None`` when it can.

    Parameters
    ----------
    root : path-like
        The artefact's folder.
    name : str
        The manifest's file name inside ``root``.
    expect : mapping, optional
        Entries the manifest must hold with exactly these values (e.g. ``{"seed": 0, "key": "..."}``).
    exclude : iterable of str
        Relative paths that are not part of the artefact (ignored when listing extra files).
    allow_extra : bool
        Accept files that the manifest does not list (e.g. a model folder that also holds logs).

    Returns
    -------
    str or None
        A one-line reason (``"file 'rgb/x.png' changed (sha256 differs)"``, ``"no manifest.json"``, ...).
    """
    root = Path(root)
    if not root.is_dir():
        return f"{root} does not exist"
    manifest = read_manifest_json(root / name)
    if manifest is None:
        return f"no readable {name} in {root}"
    for k, v in (expect or {}).items():
        if manifest.get(k) != v:
            return f"{name} has {k}={manifest.get(k)!r}, expected {v!r}"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return f"{name} records no file hashes (written by an older version)"
    problem = files_problem(root, files)
    if problem is not None:
        return problem
    if not allow_extra:
        extra = sorted(set(_listed(root, (name, *exclude))) - set(files))
        if extra:
            return f"file {extra[0]!r} is not listed in {name}" + (f" (and {len(extra) - 1} more)"
                                                                   if len(extra) > 1 else "")
    return None
