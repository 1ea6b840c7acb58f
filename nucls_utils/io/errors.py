"""One error type for bad input, naming the file, row and field."""

from __future__ import annotations

from os import PathLike

__all__ = ["NuclsFormatError"]


class NuclsFormatError(ValueError):
    """Input that does not follow the NuCLS formats.

    The message always names the file and, where they apply, the (0-based data) row and the field, e.g.
    ``csv/TCGA-..._right-9871.csv, row 3, field 'xmin': 'abc' is not an integer``.
    """

    def __init__(
        self, message: str, *, path: str | PathLike[str] | None = None, row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message  # without the location prefix, for re-raising with another location
        self.path = None if path is None else str(path)
        self.row = row
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__((", ".join(where) + ": " if where else "") + message)
