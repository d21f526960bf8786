"""The CPU kernels' register tiles (``csrc/cpu/tile_gemm.h``) at every vector width the build picks:
16 bytes (x86-64 baseline, the ahead-of-time build), 32 (AVX2) and 64 (AVX-512, whose tiles of 12
pixels x 32 channels read a blocked panel's two column blocks per row), each built on this CPU by
``tests/tile_gemm_check.cpp`` and run against plain loops, for row panels and column-blocked panels."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from hrnet_fast import _ext

CHECK = Path(__file__).with_name("tile_gemm_check.cpp")

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None or platform.machine() not in ("x86_64", "AMD64"), reason="needs c++ on x86-64"
)


@pytest.mark.parametrize("vector_bytes, tile", [(16, "6 x 8"), (32, "6 x 16"), (64, "12 x 32")])
def test_register_tiles_of_every_width_match_plain_loops(tmp_path, vector_bytes, tile):
    binary = tmp_path / f"tile_gemm_{vector_bytes}"
    build = [
        "c++", "-std=c++17", "-O1", "-Wno-psabi", f"-DHRNET_FAST_VECTOR_BYTES={vector_bytes}",
        f"-I{_ext.SOURCE_DIR}", str(CHECK), "-o", str(binary),
    ]  # fmt: skip
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    result = subprocess.run([str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{vector_bytes}-byte vectors (tiles {tile} fp32" in result.stdout
    assert result.stdout.rstrip().endswith(": 0 mismatches")
