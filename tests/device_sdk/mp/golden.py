"""The codec under MicroPython against ``tests/data/golden.json``: one JSON line per vector.

usage: micropython golden.py PATH_TO_GOLDEN_JSON

MicroPython's dicts do not keep insertion order, so a vector holding a map of
several keys is checked by decoding and re-encoding instead of byte for byte.
"""

import json
import sys
from binascii import unhexlify

from device_sdk import codec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def from_json(value: "Any") -> "Any":
    """The vector notation ({"$bin": hex}, {"$map": [[k, v], ...]}) as Python values."""
    if isinstance(value, dict) and "$bin" in value:
        return unhexlify(value["$bin"])
    if isinstance(value, dict) and "$map" in value:
        return {from_json(k): from_json(v) for k, v in value["$map"]}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def unordered(value: "Any") -> bool:
    """Whether ``value`` holds a map whose key order MicroPython may change."""
    if isinstance(value, dict):
        return len(value) > 1 or any(unordered(v) for v in value.values())
    if isinstance(value, list):
        return any(unordered(v) for v in value)
    return False


with open(sys.argv[1]) as source:
    vectors = json.load(source)["vectors"]
for vector in vectors:
    value, data = from_json(vector["value"]), unhexlify(vector["hex"])
    encoded = codec.encode(value)
    exact = not unordered(value)
    same = encoded == data if exact else codec.decode(encoded) == value and len(encoded) == len(data)
    print(json.dumps({"name": vector["name"], "decoded": codec.decode(data) == value, "encoded": same}))
