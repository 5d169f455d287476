"""Load the wire vectors of tests/data/golden.json (shared by the gateway and device SDK tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden.json"


def from_json(value: Any) -> Any:
    """Rebuild a Python value from the vector notation ({"$bin": hex}, {"$map": [[k, v], ...]})."""
    if isinstance(value, dict) and "$bin" in value:
        return bytes.fromhex(value["$bin"])
    if isinstance(value, dict) and "$map" in value:
        return {from_json(k): from_json(v) for k, v in value["$map"]}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def vectors() -> dict[str, tuple[Any, bytes]]:
    """name → (value, exact bytes)."""
    data = json.loads(GOLDEN.read_text())
    return {v["name"]: (from_json(v["value"]), bytes.fromhex(v["hex"])) for v in data["vectors"]}
