"""Shared by the comparison scripts: ``field=value[+field=value]`` overrides of a frozen config dataclass."""

from __future__ import annotations


def parse_overrides(spec: str, config) -> dict:
    """``{field: value}`` for ``spec`` (``"-"`` or empty: none), each value cast to the type of the field's current
    value in ``config`` (float where it is ``None``; booleans from true/false); an unknown field raises
    AttributeError."""
    out = {}
    for item in ([] if spec in ("", "-") else spec.split("+")):
        field, value = item.split("=")
        old = getattr(config, field)
        if isinstance(old, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"{field} is a boolean: true or false, not {value!r}")
            out[field] = value.lower() == "true"
        else:
            out[field] = float(value) if old is None else type(old)(value)
    return out
