"""Compile the Triton kernels for an H100/H200 (sm_90) on a machine without a GPU.

Runs the real launch wrappers of ``hrnet_fast.kernels`` on CPU tensors with Triton's driver
replaced by a stand-in that reports an sm_90 target and launches nothing, so every kernel
specialization the GPU benchmark uses is compiled to a cubin by Triton's own ptxas. Prints, per
kernel: compile time, registers, spills (local memory), shared memory. Catches code that only the
interpreter accepts, and register or shared-memory blow-ups, before a GPU session is spent on them.

    python benchmarks/compile_check.py [--match TEXT]

(Do not set TRITON_INTERPRET.) Exits non-zero when a kernel fails to compile, spills registers or
needs more shared memory than a block may have.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import CompiledKernel
from triton.runtime.driver import driver

SHARED_LIMIT = 232448  # bytes of shared memory a block may use on sm_90 (227 KiB)


class _Sm90WithoutLaunch:
    """Just enough of a Triton driver to compile for sm_90."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


def _no_launch(*args, **kwargs):
    return None


def _no_handles(kernel: CompiledKernel) -> None:
    kernel._run = _no_launch  # instead of loading the cubin onto a device


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, local-memory bytes per thread) from cuobjdump."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", text)
    local = re.search(r"LOCAL:(\d+)", text)
    return int(regs.group(1)) if regs else -1, int(local.group(1)) if local else -1


def _sizes(h: int, w: int) -> list[tuple[int, int]]:
    sizes = [(math.ceil(h / 4), math.ceil(w / 4))]
    for _ in range(3):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


TARGET_SMS = 132  # multiprocessors of the H100/H200 the tiles are chosen for (no GPU here to ask)


def cases(batch: int):
    """(label, launcher, args) for every launch the GPU benchmark makes, at its shapes."""
    from hrnet_fast.kernels.fusion_branch import launch_config, launch_fusion_branch
    from hrnet_fast.kernels.upsample_concat import launch_upsample_concat, launch_upsample_concat_backward
    from hrnet_fast.kernels.upsample_sum import launch_upsample_sum, launch_upsample_sum_backward
    from hrnet_fast.layout import weight_layout

    modes = [("nearest", False), ("bilinear", False), ("bilinear", True)]
    flavours = [(torch.float16, True), (torch.float32, False), (torch.bfloat16, True)]
    for width, (h, w) in [(32, (256, 192)), (48, (384, 288))]:
        sizes = _sizes(h, w)
        chans = [width * 2**k for k in range(4)]
        for dtype, cl in flavours:
            fmt = torch.channels_last if cl else torch.contiguous_format

            def new(c, hw, dtype=dtype, fmt=fmt):
                return torch.zeros(batch, c, *hw, dtype=dtype).contiguous(memory_format=fmt)

            def conv_weight(c_out, c_in, k, dtype=dtype):
                return weight_layout(torch.zeros(c_out, c_in, k, k, dtype=dtype))

            for mode, ac in modes:
                tag = f"W{width} {str(dtype)[6:]} {'CL' if cl else 'NCHW'} {mode}{' ac' if ac else ''}"
                for i in range(4):
                    c, hw = chans[i], sizes[i]
                    low = [new(c, sizes[j]) for j in range(i + 1, 4)]
                    yield (
                        f"{tag} upsample_sum branch {i}",
                        launch_upsample_sum,
                        (new(c, hw), new(c, hw), [new(c, hw) for _ in range(i)], low, mode, ac, True, cl),
                    )
                    yield (
                        f"{tag} upsample_sum_backward branch {i}",
                        launch_upsample_sum_backward,
                        (
                            new(c, hw),
                            [torch.zeros_like(t) for t in low],
                            new(c, hw),
                            new(c, hw),
                            mode,
                            ac,
                            True,
                            cl,
                        ),
                    )
                    yield (
                        f"{tag} fusion_branch branch {i}",
                        launch_fusion_branch,
                        (
                            new(c, hw),
                            new(c, hw),
                            [new(chans[j], sizes[i - 1]) for j in range(i)],
                            [conv_weight(c, chans[j], 3) for j in range(i)],
                            [new(chans[j], sizes[j]) for j in range(i + 1, 4)],
                            [conv_weight(c, chans[j], 1) for j in range(i + 1, 4)],
                            torch.zeros(c, dtype=dtype),
                            mode,
                            ac,
                            True,
                            cl,
                            launch_config(batch * hw[0] * hw[1], c, dtype.itemsize, mode == "bilinear", TARGET_SMS),
                        ),
                    )
                xs = [new(chans[k], sizes[k]) for k in range(4)]
                yield (
                    f"{tag} upsample_concat",
                    launch_upsample_concat,
                    (new(sum(chans), sizes[0]), xs, mode, ac, cl),
                )
                yield (
                    f"{tag} upsample_concat_backward",
                    launch_upsample_concat_backward,
                    ([torch.zeros_like(x) for x in xs], new(sum(chans), sizes[0]), mode, ac, cl),
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--match", default="", help="only cases whose label contains this text")
    args = parser.parse_args()

    driver.set_active(_Sm90WithoutLaunch())
    CompiledKernel._init_handles = _no_handles

    seen: set[str] = set()
    failures = 0
    print(f"triton {triton.__version__}, target sm_90")
    for label, launch, launch_args in cases(batch=16):
        if args.match not in label:
            continue
        start = time.perf_counter()
        try:
            launch(*launch_args)
        except Exception as exc:  # report every failing specialization, not only the first
            failures += 1
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:2000]}")
            continue
        elapsed = time.perf_counter() - start
        new = []
        for jit in _jit_functions():
            for kernel in jit.device_caches[0][0].values():
                if kernel.hash not in seen:
                    seen.add(kernel.hash)
                    new.append(kernel)
        for kernel in new:
            regs, local = _resource_usage(kernel.asm["cubin"])
            shared = kernel.metadata.shared
            flag = " SHARED>LIMIT" if shared > SHARED_LIMIT else (" SPILLS" if local > 0 else "")
            failures += bool(flag)
            print(
                f"{label:58s} {kernel.name[:28]:28s} warps {kernel.metadata.num_warps} regs {regs:3d} "
                f"local {local:4d} B shared {shared:6d} B  {elapsed:5.1f} s{flag}"
            )
    print(f"{len(seen)} kernels compiled, {failures} problems")
    return 1 if failures else 0


def _jit_functions():
    from hrnet_fast.kernels import fusion_branch, interp, upsample_concat, upsample_sum

    return [
        upsample_sum.upsample_sum_kernel,
        upsample_sum.relu_grad_kernel,
        interp.interp_adjoint_kernel,
        upsample_concat.upsample_concat_kernel,
        fusion_branch.fusion_branch_kernel,
    ]


if __name__ == "__main__":
    sys.exit(main())
