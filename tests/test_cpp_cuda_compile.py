"""The CUDA sources compile on machines without a GPU: ``nvcc -arch=sm_90 -c`` on the torch-free kernel
files (nvcc on PATH or at /usr/local/bin/nvcc; skipped without), with ptxas's resource report per
kernel (registers, spills, shared memory: printed, and a spill or a resource over sm_90's limits
fails), and a syntax check of the torch bindings against this torch's headers and the CUDA
toolkit's. (The kernels' results are checked without a GPU by the emulation in test_cpp_ops.py and
test_fusion_branch.py, and on a GPU by the tests marked ``cuda``.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from hrnet_fast import _ext

CUDA_DIR = _ext.SOURCE_DIR / "cuda"
KERNELS = sorted(CUDA_DIR.glob("*.cu"))
MAX_REGISTERS = 255  # per thread on sm_90
MAX_STATIC_SHARED = 48 * 1024  # bytes per block without an opt-in
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


@pytest.mark.parametrize("kernels", KERNELS, ids=lambda p: p.name)
def test_the_kernel_files_include_no_torch_header(kernels):
    torch_headers = [h for h in _includes(kernels) if h.split("/")[0] in ("torch", "ATen", "c10")]
    assert not torch_headers


def _run_all(commands: list[list[str]]) -> list[str]:
    """Run the commands side by side; each must succeed. Returns their outputs."""
    jobs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = []
    for job in jobs:
        output, _ = job.communicate()
        assert job.returncode == 0, f"{' '.join(job.args)}\n{output[-4000:]}"
        outputs.append(output)
    return outputs


def _demangle(names: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if tool is None:
        return names
    return subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()


def ptxas_resources(output: str) -> list[dict]:
    """Per kernel of ``ptxas -v`` output: name, registers, spill bytes, stack frame and shared memory."""
    kernels = []
    for block in re.split(r"ptxas info\s*: Compiling entry function ", output)[1:]:
        name = re.match(r"'([^']+)'", block).group(1)
        numbers = {
            key: int(m.group(1)) if (m := re.search(pattern, block)) else 0
            for key, pattern in [
                ("registers", r"Used (\d+) registers"),
                ("spill_stores", r"(\d+) bytes spill stores"),
                ("spill_loads", r"(\d+) bytes spill loads"),
                ("stack", r"(\d+) bytes stack frame"),
                ("smem", r"(\d+) bytes smem"),
            ]
        }
        kernels.append({"name": name, **numbers})
    for kernel, readable in zip(kernels, _demangle([k["name"] for k in kernels]), strict=True):
        kernel["name"] = re.sub(r"\(anonymous namespace\)::|hrnet_fast::(cuda::)?(branch::)?", "", readable)
    return kernels


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, /usr/local/bin)")
def test_nvcc_compiles_the_kernels_for_sm90_without_spills(tmp_path):
    flags = [*cpp_extension.COMMON_NVCC_FLAGS, "-std=c++17", *_ext.build_flags(with_cuda=True)["nvcc"]]
    assert "-gencode=arch=compute_90,code=sm_90" in flags
    commands = [
        [NVCC, *flags, "-Xptxas=-v", f"-I{_ext.SOURCE_DIR}", "-c", str(k), "-o", str(tmp_path / f"{k.stem}.o")]
        for k in KERNELS
    ]
    kernels = [k for output in _run_all(commands) for k in ptxas_resources(output)]
    assert len(kernels) >= len(KERNELS)
    for k in kernels:
        print(
            f"{k['registers']:4d} regs {k['spill_stores'] + k['spill_loads']:5d} B spilled "
            f"{k['stack']:5d} B stack {k['smem']:6d} B smem  {k['name']}"
        )
    bad = [
        k
        for k in kernels
        if k["spill_stores"] or k["spill_loads"] or k["registers"] > MAX_REGISTERS or k["smem"] > MAX_STATIC_SHARED
    ]
    assert not bad, f"kernels that spill or exceed sm_90's limits: {bad}"


@pytest.mark.skipif(_ext.cuda_home() is None, reason="no CUDA toolkit headers")
def test_the_cuda_bindings_parse_against_the_torch_and_cuda_headers():
    # The CPU build of torch ships the c10/cuda headers but not their generated config header.
    flags = ["-std=c++17", "-fsyntax-only", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", f"-I{_ext.SOURCE_DIR}"]
    flags += [f"-isystem{p}" for p in cpp_extension.include_paths()] + [f"-isystem{_ext.cuda_home()}/include"]
    _run_all([["c++", *flags, str(source)] for source in BINDINGS])
