"""The CUDA sources compile on machines without a GPU: ``nvcc -arch=sm_90 -c`` on the torch-free kernel
file (nvcc on PATH or at /usr/local/bin/nvcc; skipped without), and a syntax check of the torch
bindings against this torch's headers and the CUDA toolkit's. (The kernels' results are checked
without a GPU by the emulation in test_cpp_ops.py, and on a GPU by the tests marked ``cuda``.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from hrnet_fast import _ext

CUDA_DIR = _ext.SOURCE_DIR / "cuda"
KERNELS = CUDA_DIR / "upsample_sum_kernel.cu"
BINDINGS = sorted(CUDA_DIR.glob("*_binding.cpp"))
NVCC = shutil.which("nvcc") or next((p for p in ["/usr/local/bin/nvcc"] if Path(p).exists()), None)


def _includes(path: Path, seen: set[Path] | None = None) -> set[str]:
    """Every header ``path`` includes, transitively through the project's own headers."""
    seen = set() if seen is None else seen
    found = set()
    for name in re.findall(r'#include [<"]([^>"]+)[>"]', path.read_text()):
        found.add(name)
        local = (path.parent / name).resolve()
        if local.exists() and local not in seen:
            seen.add(local)
            found |= _includes(local, seen)
    return found


def test_the_kernel_file_includes_no_torch_header():
    torch_headers = [h for h in _includes(KERNELS) if h.split("/")[0] in ("torch", "ATen", "c10")]
    assert not torch_headers


def _run_all(commands: list[list[str]]) -> None:
    """Run the commands side by side; each must succeed."""
    jobs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    for job in jobs:
        output, _ = job.communicate()
        assert job.returncode == 0, f"{' '.join(job.args)}\n{output[-4000:]}"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, /usr/local/bin)")
def test_nvcc_compiles_the_kernels_for_sm90_with_the_build_flags(tmp_path):
    flags = [*cpp_extension.COMMON_NVCC_FLAGS, "-std=c++20", *_ext.build_flags(with_cuda=True)["nvcc"]]
    assert "-gencode=arch=compute_90,code=sm_90" in flags
    _run_all([[NVCC, *flags, f"-I{_ext.SOURCE_DIR}", "-c", str(KERNELS), "-o", str(tmp_path / "k.o")]])


@pytest.mark.skipif(_ext.cuda_home() is None, reason="no CUDA toolkit headers")
def test_the_cuda_bindings_parse_against_the_torch_and_cuda_headers():
    # The CPU build of torch ships the c10/cuda headers but not their generated config header.
    flags = ["-std=c++20", "-fsyntax-only", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", f"-I{_ext.SOURCE_DIR}"]
    flags += [f"-isystem{p}" for p in cpp_extension.include_paths()] + [f"-isystem{_ext.cuda_home()}/include"]
    _run_all([["c++", *flags, str(source)] for source in BINDINGS])
