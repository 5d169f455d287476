"""The examples in device_sdk/README.md run as written (against a private broker and gateway).

A Python block preceded by ``<!-- run: cpython -->`` or ``<!-- run: micropython -->`` is run
with the broker's port for 1883 and a fresh device id for "pi-1"; a text block preceded by
``<!-- output -->`` right after it is what it must print.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.device_sdk.programs import ROOT, Program, tool
from tests.device_sdk.stack import Stack

pytestmark = pytest.mark.slow  # the README's examples on CPython and MicroPython, against a gateway

README = ROOT / "device_sdk" / "README.md"
EXAMPLE = re.compile(
    r"<!-- run: (?P<runtime>\w+) -->\n```python\n(?P<code>.*?)```\n"
    r"(?:\s*[^`<]*<!-- output -->\n```text\n(?P<output>.*?)```)?",
    re.S,
)


def examples() -> list[tuple[str, str, str | None]]:
    found = [(m["runtime"], m["code"], m["output"]) for m in EXAMPLE.finditer(README.read_text())]
    assert {runtime for runtime, _, _ in found} == {"cpython", "micropython"}
    assert all(output is not None for _, _, output in found), "every example shows what it prints"
    return found


EXAMPLES = examples()


@pytest.mark.parametrize(("runtime", "code", "output"), EXAMPLES, ids=[runtime for runtime, _, _ in EXAMPLES])
def test_readme_example(stack: Stack, device_id: str, runtime: str, code: str, output: str | None) -> None:
    code = code.replace("1883", str(stack.port)).replace('"pi-1"', f'"{device_id}"')
    if runtime == "cpython":
        program = Program([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT)})
    else:
        program = Program([tool("micropython"), "-c", code], env={"MICROPYPATH": str(ROOT)})
    with program:
        program.finish(30)
    if output is not None:
        assert "\n".join(program.lines) + "\n" == output
