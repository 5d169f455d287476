"""Topic templates: compile once, turn into MQTT filters, match topics, extract parameters.

A template is a topic whose levels may be ``{name}`` (one level, MQTT ``+``) or,
as the last level only, ``{name:path}`` (the rest of the topic, MQTT ``#``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import TemplateError

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}$")

MAX_TOPIC_BYTES = 65_535  # an MQTT string's length field
# What mosquitto refuses in a topic, as its mosquitto_validate_utf8 does (a PUBLISH carrying one
# is a malformed packet and costs the sender its connection): C0 and C1 controls and DEL,
# surrogates (no UTF-8 encodes them), and the Unicode non-characters U+FDD0-U+FDEF and
# U+xFFFE/U+xFFFF of every plane.
_UNPUBLISHABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)


@dataclass(frozen=True, slots=True)
class _Level:
    literal: str | None  # None for a parameter
    param: str | None
    is_path: bool


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A compiled topic template such as ``devices/{device_id}/add``."""

    template: str
    levels: tuple[_Level, ...]

    @classmethod
    def parse(cls, template: str) -> TopicTemplate:
        """Compile ``template`` or raise :class:`TemplateError` saying what is wrong."""
        if not template:
            raise TemplateError("topic template is empty")
        if template.startswith("$"):
            raise TemplateError(f"topic template {template!r} must not start with '$'")
        parts = template.split("/")
        levels: list[_Level] = []
        seen: set[str] = set()
        for index, part in enumerate(parts):
            if "+" in part or "#" in part:
                raise TemplateError(f"topic template {template!r} uses an MQTT wildcard; use {{name}} or {{name:path}}")
            if "{" in part or "}" in part:
                match = _PARAM.match(part)
                if match is None:
                    raise TemplateError(
                        f"topic template {template!r}: level {part!r} must be a whole {{name}} or {{name:path}}"
                    )
                name, path = match.group(1), match.group(2)
                if name in seen:
                    raise TemplateError(f"topic template {template!r} repeats parameter {name!r}")
                if path and name == "device_id":
                    raise TemplateError(f"topic template {template!r}: {{device_id}} names one level, not a path")
                if path and index != len(parts) - 1:
                    raise TemplateError(f"topic template {template!r}: {{{name}:path}} must be the last level")
                seen.add(name)
                levels.append(_Level(None, name, bool(path)))
            else:
                bad = _UNPUBLISHABLE.search(part)
                if bad is not None:
                    code = f"U+{ord(bad.group()):04X}"
                    raise TemplateError(f"topic template {template!r} holds {code}, which MQTT forbids in a topic")
                levels.append(_Level(part, None, False))
        return cls(template, tuple(levels))

    @property
    def params(self) -> tuple[str, ...]:
        """Parameter names in order of appearance."""
        return tuple(level.param for level in self.levels if level.param is not None)

    @property
    def mqtt_filter(self) -> str:
        """The MQTT subscription filter this template matches."""
        out = []
        for level in self.levels:
            if level.literal is not None:
                out.append(level.literal)
            else:
                out.append("#" if level.is_path else "+")
        return "/".join(out)

    @property
    def has_path(self) -> bool:
        """Whether the last level is ``{name:path}``."""
        return self.levels[-1].is_path

    def match(self, topic: str) -> dict[str, str] | None:
        """Return the parameters when ``topic`` matches, else ``None``.

        ``{name}`` never matches an empty level; ``{name:path}`` matches one or
        more levels.
        """
        return self.match_levels(topic.split("/"))

    def match_levels(self, parts: list[str]) -> dict[str, str] | None:
        """:meth:`match` for a topic already split into levels."""
        params: dict[str, str] = {}
        for index, level in enumerate(self.levels):
            if level.is_path:
                rest = parts[index:]
                if not rest or rest == [""]:
                    return None
                params[level.param or ""] = "/".join(rest)
                return params
            if index >= len(parts):
                return None
            part = parts[index]
            if level.literal is not None:
                if part != level.literal:
                    return None
            else:
                if not part:
                    return None
                params[level.param or ""] = part
        if len(parts) != len(self.levels):
            return None
        return params

    def render(self, params: dict[str, str]) -> str:
        """Fill the template with ``params`` (used for ``publish=`` targets)."""
        out = []
        for level in self.levels:
            if level.literal is not None:
                out.append(level.literal)
            else:
                try:
                    out.append(params[level.param or ""])
                except KeyError:
                    raise TemplateError(f"topic template {self.template!r} needs parameter {level.param!r}") from None
        return "/".join(out)


BROKER_MAX_LEVELS = 200  # mosquitto refuses a topic of more levels (TOPIC_HIERARCHY_LIMIT)


def publish_problem(topic: str, max_levels: int) -> str | None:
    """Why the broker would refuse a PUBLISH to ``topic`` (completes "the topic …"); ``None`` if it would not.

    Checked on every topic the gateway publishes to that a request chose (a reply topic) or that
    a request's parameters filled in: a topic mosquitto refuses gets the gateway disconnected.
    ``max_levels`` is the gateway's own bound on levels (mosquitto refuses more than 200).
    """
    if not topic:
        return "is empty"
    if "+" in topic or "#" in topic:
        return "holds an MQTT wildcard"
    if topic.startswith("$"):
        return "starts with '$' (the broker's own topics)"
    # An ASCII topic can only hold C0 controls or DEL of that set, and isprintable() refuses exactly those
    # there: two C scans instead of the regex's (~1 µs for a short topic, on every uncached reply topic).
    bad = None if topic.isascii() and topic.isprintable() else _UNPUBLISHABLE.search(topic)
    if bad is not None:
        return f"holds U+{ord(bad.group()):04X}, which MQTT forbids in a topic"
    if len(topic) * 4 > MAX_TOPIC_BYTES and len(topic.encode()) > MAX_TOPIC_BYTES:
        return f"is over {MAX_TOPIC_BYTES} bytes"
    levels = topic.count("/") + 1
    max_levels = min(max_levels, BROKER_MAX_LEVELS)  # whatever the setting, never past what mosquitto takes
    if levels > max_levels:
        return f"has {levels} levels, over the limit of {max_levels}"
    return None


def filter_matches(mqtt_filter: str, topic: str) -> bool:
    """True when ``topic`` matches the MQTT subscription ``mqtt_filter``."""
    if topic.startswith("$") and not mqtt_filter.startswith("$"):
        return False
    f_parts = mqtt_filter.split("/")
    t_parts = topic.split("/")
    for index, f in enumerate(f_parts):
        if f == "#":
            return True
        if index >= len(t_parts):
            return False
        if f != "+" and f != t_parts[index]:
            return False
    return len(f_parts) == len(t_parts)


def filters_overlap(a: str, b: str) -> bool:
    """True when some topic matches both MQTT filters ``a`` and ``b``."""
    a_parts, b_parts = a.split("/"), b.split("/")
    for index in range(max(len(a_parts), len(b_parts))):
        x = a_parts[index] if index < len(a_parts) else None
        y = b_parts[index] if index < len(b_parts) else None
        if x == "#" or y == "#":
            # '#' also matches the parent level ("a/#" matches "a").
            return True
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True


def filter_covers(outer: str, inner: str) -> bool:
    """True when every topic matched by ``inner`` is matched by ``outer``."""
    o_parts, i_parts = outer.split("/"), inner.split("/")
    for index, o in enumerate(o_parts):
        if o == "#":
            return True
        if index >= len(i_parts):
            return False
        i = i_parts[index]
        if i == "#":
            return False
        if o != "+" and (i == "+" or i != o):
            return False
    return len(o_parts) == len(i_parts)


def shared_filter(mqtt_filter: str, group: str | None) -> str:
    """``$share/<group>/<filter>`` (MQTT 5 shared subscription), or the filter itself without a group.

    The broker delivers each message of a shared subscription to one member of
    the group, with its real topic: only SUBSCRIBE sees the prefix.
    """
    return f"$share/{group}/{mqtt_filter}" if group else mqtt_filter
