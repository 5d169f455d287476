"""How small a MicroPython heap the SDK needs for one call; the figures in device_sdk/README.md.

Re-measure with ``python -m tests.device_sdk.heap`` after changing the device side of the SDK.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.device_sdk.heap import call_works
from tests.device_sdk.programs import ROOT, compile_sdk, run
from tests.device_sdk.stack import Stack

# Upper bounds stated in device_sdk/README.md (64-bit unix port; a 32-bit board needs less).
FROM_SOURCE_KIB = 72
PRECOMPILED_KIB = 48


@pytest.fixture(scope="module")
def precompiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_sdk(tmp_path_factory.mktemp("mpy"))


def test_the_readme_states_the_figures_checked_here() -> None:
    readme = (ROOT / "device_sdk" / "README.md").read_text()
    assert f"{FROM_SOURCE_KIB} KiB" in readme and f"{PRECOMPILED_KIB} KiB" in readme


def test_a_call_fits_in_the_stated_heap(stack: Stack, precompiled: Path) -> None:
    assert call_works(stack.port, FROM_SOURCE_KIB)
    assert call_works(stack.port, PRECOMPILED_KIB, precompiled)


def test_precompiling_lowers_the_heap_needed(stack: Stack, precompiled: Path) -> None:
    assert not call_works(stack.port, PRECOMPILED_KIB)  # from source, the compiler itself needs the heap


def test_the_codec_matches_the_golden_vectors_under_micropython(precompiled: Path) -> None:
    results = run("golden.py", str(ROOT / "tests" / "data" / "golden.json"), path=precompiled).results
    assert len(results) == 16
    assert all(r["decoded"] and r["encoded"] for r in results), results
