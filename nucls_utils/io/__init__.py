"""NuCLS data I/O: FOV names, single-rater dataset folders, masks, core-set metadata, hospital folds."""

from .atomic import atomic_dir, atomic_path
from .dataset import (
    ANNOTATION_TYPES,
    CSV_COLUMNS,
    FovRecord,
    Nucleus,
    annotations_frame,
    convert_dataset,
    fovs_frame,
    read_dataset,
    read_fov_csv,
    read_fov_locations,
    validate_record,
    write_dataset,
    write_fov_csv,
    write_fov_files,
    write_fov_locations,
)
from .errors import NuclsFormatError
from .folds import (
    PAPER_FOLD_N_FOVS,
    PAPER_FOLDS,
    PAPER_TABLE1_N,
    core_table1_n,
    detection_mask,
    detection_n,
    fold_slides,
    fold_table,
    hospital_kfold,
    load_fold_assignment,
    paper_folds,
    save_fold_assignment,
)
from .manifest import hash_files, read_manifest_json, sha256_file, verify_manifest, write_manifest
from .masks import (
    decode_mask,
    encode_mask,
    nucleus_pixels,
    rasterize_instances,
    read_mask_png,
    write_mask_png,
)
from .metadata import CORE_METADATA_NAME, find_core_metadata, fov_rectangles, read_core_metadata
from .multirater import multirater_frame, read_multirater, write_multirater
from .naming import FovName, format_fov_name, hospital_of, parse_fov_name, slide_of

__all__ = [
    "ANNOTATION_TYPES", "CORE_METADATA_NAME", "CSV_COLUMNS", "find_core_metadata", "fov_rectangles", "FovName", "FovRecord", "Nucleus", "NuclsFormatError", "PAPER_FOLDS",
    "PAPER_FOLD_N_FOVS", "PAPER_TABLE1_N", "annotations_frame", "atomic_dir", "convert_dataset", "atomic_path", "decode_mask",
    "detection_mask", "detection_n", "encode_mask", "fold_slides", "fold_table", "format_fov_name", "fovs_frame",
    "hospital_kfold", "hospital_of", "nucleus_pixels", "paper_folds", "parse_fov_name", "rasterize_instances",
    "read_core_metadata", "read_dataset", "read_fov_csv", "read_fov_locations", "read_mask_png", "slide_of",
    "validate_record", "write_dataset", "write_multirater", "read_multirater", "multirater_frame", "write_fov_csv", "write_fov_files", "write_fov_locations", "write_mask_png",
    "hash_files", "read_manifest_json", "sha256_file", "verify_manifest", "write_manifest",
    "save_fold_assignment", "load_fold_assignment", "core_table1_n",
]
