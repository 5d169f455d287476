"""Resource arithmetic for offers: scalars (cpus, mem, disk, ...) and ranges (ports).

Only unreserved resources of the default role ``*`` exist in the stand-in; reservations, disks
and sets are out of scope (see README). Scalars are rounded to 3 decimals like Mesos's fixed-point
``Value::Scalar`` arithmetic, so 0.1 + 0.2 compares equal to 0.3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tests.mesos_standin.protocol import Json

Range = tuple[int, int]

_FLAG_ITEM = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*:\s*(.+?)\s*$")


def _round(value: float) -> float:
    return round(value + 0.0, 3)


def _normalize(ranges: list[Range]) -> list[Range]:
    """Sort and merge overlapping or adjacent ranges."""
    merged: list[Range] = []
    for begin, end in sorted(ranges):
        if merged and begin <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def _subtract_ranges(have: list[Range], take: list[Range]) -> list[Range]:
    result = list(have)
    for t_begin, t_end in take:
        pieces: list[Range] = []
        for begin, end in result:
            if t_end < begin or t_begin > end:
                pieces.append((begin, end))
                continue
            if begin < t_begin:
                pieces.append((begin, t_begin - 1))
            if t_end < end:
                pieces.append((t_end + 1, end))
        result = pieces
    return _normalize(result)


def _covers(have: list[Range], need: list[Range]) -> bool:
    return all(any(b <= n_begin and n_end <= e for b, e in have) for n_begin, n_end in _normalize(need))


@dataclass
class Resources:
    """A bag of unreserved resources."""

    scalars: dict[str, float] = field(default_factory=dict)
    ranges: dict[str, list[Range]] = field(default_factory=dict)

    @classmethod
    def parse_flag(cls, text: str) -> Resources:
        """Parse the agent flag syntax, e.g. ``cpus:4;mem:7680;disk:40960;ports:[31000-32000]``."""
        result = cls()
        for item in filter(None, (part.strip() for part in text.split(";"))):
            match = _FLAG_ITEM.match(item)
            if match is None:
                raise ValueError(f"bad resource {item!r}")
            name, value = match.groups()
            if value.startswith("["):
                spans = [span.split("-") for span in value.strip("[]").split(",") if span.strip()]
                result.ranges[name] = _normalize([(int(b), int(e)) for b, e in spans])
            else:
                result.scalars[name] = _round(float(value))
        return result

    @classmethod
    def from_json(cls, items: object) -> Resources:
        """Parse a ``Resource`` list; ``ValueError`` for anything malformed or not scalar/ranges."""
        if not isinstance(items, list):
            raise ValueError("resources must be a list")
        result = cls()
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ValueError(f"bad resource {item!r}")
            name, kind = item["name"], item.get("type", "SCALAR")
            if kind == "SCALAR":
                value = float(item.get("scalar", {}).get("value", -1))
                if value < 0:
                    raise ValueError(f"bad scalar for {name}")
                result.scalars[name] = _round(result.scalars.get(name, 0.0) + value)
            elif kind == "RANGES":
                spans = [(int(r["begin"]), int(r["end"])) for r in item.get("ranges", {}).get("range", [])]
                if any(b > e for b, e in spans):
                    raise ValueError(f"bad range for {name}")
                result.ranges[name] = _normalize(result.ranges.get(name, []) + spans)
            else:
                raise ValueError(f"resource type {kind} is not supported by the stand-in")
        return result

    def to_json(self) -> list[Json]:
        """The ``Resource`` list, as offers carry it (role ``*``, no allocation_info)."""
        items: list[Json] = [
            {"name": name, "type": "SCALAR", "scalar": {"value": value}, "role": "*"}
            for name, value in sorted(self.scalars.items())
            if value > 0
        ]
        items += [
            {
                "name": name,
                "type": "RANGES",
                "ranges": {"range": [{"begin": b, "end": e} for b, e in spans]},
                "role": "*",
            }
            for name, spans in sorted(self.ranges.items())
            if spans
        ]
        return items

    def to_state(self) -> Json:
        """The flat form ``/master/state`` uses: cpus/gpus/mem/disk always present, ranges as text."""
        flat: Json = {"cpus": 0.0, "gpus": 0.0, "mem": 0.0, "disk": 0.0}
        flat.update(self.scalars)
        for name, spans in self.ranges.items():
            flat[name] = "[" + ", ".join(f"{b}-{e}" for b, e in spans) + "]"
        return flat

    def __add__(self, other: Resources) -> Resources:
        scalars = dict(self.scalars)
        for name, value in other.scalars.items():
            scalars[name] = _round(scalars.get(name, 0.0) + value)
        ranges = {name: list(spans) for name, spans in self.ranges.items()}
        for name, spans in other.ranges.items():
            ranges[name] = _normalize(ranges.get(name, []) + spans)
        return Resources(scalars, ranges)

    def __sub__(self, other: Resources) -> Resources:
        """What is left after taking ``other`` (never below zero)."""
        scalars = {name: max(0.0, _round(value - other.scalars.get(name, 0.0))) for name, value in self.scalars.items()}
        ranges = {name: _subtract_ranges(spans, other.ranges.get(name, [])) for name, spans in self.ranges.items()}
        return Resources(scalars, ranges)

    def contains(self, other: Resources) -> bool:
        """True when every resource in ``other`` is available here."""
        if any(value > self.scalars.get(name, 0.0) + 1e-9 for name, value in other.scalars.items()):
            return False
        return all(_covers(self.ranges.get(name, []), spans) for name, spans in other.ranges.items())

    def is_empty(self) -> bool:
        """True when nothing is left."""
        return not any(v > 0 for v in self.scalars.values()) and not any(self.ranges.values())

    def allocatable(self) -> bool:
        """Worth offering: Mesos's allocator needs at least 0.01 cpus or 32 MB of memory."""
        return self.scalars.get("cpus", 0.0) >= 0.01 or self.scalars.get("mem", 0.0) >= 32.0
