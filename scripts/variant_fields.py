"""Shared by the comparison scripts: ``field=value[+field=value]`` overrides of a frozen config dataclass."""

from __future__ import annotations


def parse_overrides(spec: str, config) -> dict:
    """``{field: value}`` for ``spec`` (``"-"`` or empty: none), each value cast to the type of the field's current
    value in ``config`` (float where it is ``None``); an unknown field raises AttributeError."""
    out = {}
    for item in ([] if spec in ("", "-") else spec.split("+")):
        field, value = item.split("=")
        old = getattr(config, field)
        out[field] = float(value) if old is None else type(old)(value)
    return out
