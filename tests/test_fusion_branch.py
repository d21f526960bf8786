"""Level 2: the fused ``fusion_branch`` op of every backend with a kernel for it against its reference
composition: triton (CPU under the interpreter, CUDA), cpp (its CPU kernel, its CUDA kernel on a GPU,
and its CUDA kernel emulated on the host: ``emulated_cuda.py``).

Outputs are poisoned (torch's deterministic mode fills every fresh tensor with NaN), so an element a
kernel forgets to write fails; results are judged by :func:`hrnet_fast.testing.assert_matches`
(fp32 close to float64 with the tolerance of long dot products; fp16/bf16 at most twice as far from
float64 as the reference implementation's own error).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from emulated_cuda import emulated_library
from triton_helpers import (
    FORMATS,
    TRITON_UNAVAILABLE,
    exact_fp32,  # noqa: F401  (an autouse fixture)
    fresh,
)

from hrnet_fast.kernels import interpreted
from hrnet_fast.layout import weight_layout
from hrnet_fast.ops import fusion_branch, fusion_branch_reference
from hrnet_fast.ops.registry import OpLibrary
from hrnet_fast.testing import assert_matches

pytestmark = pytest.mark.usefixtures("poisoned_outputs")

MODES = [("nearest", False), ("bilinear", False), ("bilinear", True)]
# base shape, down-path input shapes (stride-2 convs onto base), low-path shapes; channels off 16
CASES = {
    "middle": ((1, 24, 7, 5), [(1, 16, 13, 9), (1, 20, 14, 10)], [(1, 40, 4, 3)]),
    "first": ((2, 16, 9, 11), [], [(2, 32, 5, 6), (2, 48, 3, 3), (2, 8, 1, 2)]),
    "last": ((1, 48, 4, 3), [(1, 16, 8, 6), (1, 32, 7, 5), (1, 8, 8, 5)], []),
}
LOW_PRECISION = [torch.float16, torch.bfloat16]


@dataclass(frozen=True)
class Target:
    """A kernel under test: its custom op, the backend that runs it (None: emulated, not a
    backend), the device and the dtypes it takes."""

    name: str
    device: str
    backend: str | None
    dtypes: tuple[torch.dtype, ...]

    @property
    def op(self):
        if self.backend is None:
            return emulated_library().fusion_branch
        return OpLibrary("hrnet_fast", self.backend).fusion_branch


def _target(name, device, backend, dtypes, *marks):
    return pytest.param(Target(name, device, backend, dtypes), marks=list(marks), id=f"{name}-{device}")


TRITON_ON_CPU = pytest.mark.skipif(
    TRITON_UNAVAILABLE is not None or not interpreted(), reason="Triton runs on the CPU only when interpreted"
)
GPU_DTYPES = (torch.float32, *LOW_PRECISION)
TARGETS = [
    _target("triton", "cpu", "triton", GPU_DTYPES, TRITON_ON_CPU),
    _target("triton", "cuda", "triton", GPU_DTYPES, pytest.mark.cuda),
    _target("cpp", "cpu", "cpp", (*GPU_DTYPES, torch.float64)),
    _target("cpp", "cuda", "cpp", GPU_DTYPES, pytest.mark.cuda),
    _target("cpp-emulated", "cpu", None, GPU_DTYPES),  # the cpp backend's CUDA kernel, on the host
]


def _inputs(case, dtype, device, fmt):
    base_shape, down_shapes, low_shapes = CASES[case] if isinstance(case, str) else case
    c = base_shape[1]
    base = fresh(base_shape, dtype, device, fmt)
    down = [fresh(s, dtype, device, fmt) for s in down_shapes]
    low = [fresh(s, dtype, device, fmt) for s in low_shapes]
    down_w = [(fresh((c, s[1], 3, 3), device=device) / (3 * s[1] ** 0.5)).to(dtype) for s in down_shapes]
    low_w = [(fresh((c, s[1], 1, 1), device=device) / s[1] ** 0.5).to(dtype) for s in low_shapes]
    return base, down, down_w, low, low_w, fresh((c,), dtype, device)


def _double(args):
    return [[t.double() for t in a] if isinstance(a, list) else a.double() for a in args]


def _check(out, args, mode, ac, relu=True, what="fusion_branch"):
    ref = fusion_branch_reference(*args, mode, ac, relu)
    exact = fusion_branch_reference(*_double(args), mode, ac, relu)
    assert_matches(out, ref, exact, what, tol=1e-5 if out.dtype == torch.float32 else None)


def _dtype_params():
    return [
        pytest.param(t.values[0], dtype, marks=t.marks, id=f"{t.id}-{str(dtype).removeprefix('torch.')}")
        for t in TARGETS
        for dtype in t.values[0].dtypes
    ]


@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize(("mode", "ac"), MODES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("target", "dtype"), _dtype_params())
def test_kernel_writes_every_element_and_matches_the_reference(target, dtype, case, mode, ac, fmt):
    base, down, down_w, low, low_w, bias = args = _inputs(case, dtype, target.device, fmt)
    packed = [weight_layout(w) for w in down_w], [weight_layout(w) for w in low_w]
    out = target.op(base, down, packed[0], low, packed[1], bias, mode, ac, True)
    assert out.stride() == base.stride()
    _check(out, args, mode, ac)


@pytest.mark.parametrize("target", TARGETS)
def test_op_takes_any_weight_layout_and_keeps_base_strides(target):
    base, down, down_w, low, low_w, bias = args = _inputs("middle", torch.float32, target.device, torch.channels_last)
    out = target.op(base, down, down_w, low, low_w, bias, "bilinear", False, False)
    _check(out, args, "bilinear", False, relu=False)
    assert out.stride() == base.stride() and (out < 0).any()  # relu=False keeps negatives


@pytest.mark.parametrize("base_fmt", FORMATS, ids=["nchw-base", "cl-base"])
@pytest.mark.parametrize(("target", "dtype"), _dtype_params())
def test_maps_in_mixed_layouts(target, dtype, base_fmt):
    """Down and low maps in layouts of their own: the other layout than base's, base's, and a channel
    slice (dense in neither, so the op copies it). The CPU kernel reads the first two as they are
    (channels_last in place, NCHW staged per band); the others get them in base's layout."""
    case = ((2, 24, 7, 5), [(2, 16, 13, 9), (2, 20, 14, 10), (2, 12, 13, 10)], [(2, 40, 4, 3), (2, 8, 7, 5)])
    other = torch.channels_last if base_fmt == torch.contiguous_format else torch.contiguous_format
    base, down, down_w, low, low_w, bias = _inputs(case, dtype, target.device, base_fmt)
    down = [down[0].contiguous(memory_format=other), down[1], torch.cat([down[2], down[2]], 1)[:, 3:15]]
    low = [low[0].contiguous(memory_format=other), low[1]]
    args = base, down, down_w, low, low_w, bias
    out = target.op(*args, "bilinear", False, True)
    assert out.stride() == base.stride()
    _check(out, args, "bilinear", False)


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("target", [t for t in TARGETS if t.values[0].name != "triton"])
def test_odd_sizes_many_tiles_and_batches_split_into_launches(target, dtype):
    """Channels that fill no vector or tile (33, 70; odd input channels: the CPU kernel's last bf16
    pair is padded with 0; fp32 NCHW: partial 8 x 8 transpose blocks), a lower branch larger than
    base (interpolation down), tiles in both grid dimensions, and (emulated: at most 4096 pixels per
    launch) 3 samples of 1647 pixels in two launches."""
    case = ((3, 70, 27, 61), [(3, 33, 53, 122)], [(3, 9, 30, 70), (3, 50, 7, 16)])
    for fmt, (mode, ac) in zip(FORMATS, [("bilinear", True), ("nearest", False)], strict=True):
        args = _inputs(case, dtype, target.device, fmt)
        _check(target.op(*args, mode, ac, True), args, mode, ac, what=f"{fmt} {mode}")


# One problem per CTA tile of the CUDA kernel (pixels x channels), as the emulation picks them (the
# larger tiles from 2 CTAs on, a GPU from 264): base's channels and pixels decide.
CTA_TILE_CASES = {
    (128, 32): ((1, 24, 9, 7), [(1, 16, 17, 13)], [(1, 40, 5, 4)]),
    (64, 64): ((1, 48, 9, 7), [(1, 16, 17, 13)], [(1, 40, 5, 4)]),
    (128, 64): ((2, 48, 9, 11), [(2, 16, 17, 21)], [(2, 40, 5, 6)]),
    (64, 128): ((1, 96, 9, 11), [(1, 16, 17, 21)], [(1, 40, 5, 6)]),
}


@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "cl"])
@pytest.mark.parametrize("dtype", GPU_DTYPES)
@pytest.mark.parametrize("tile", list(CTA_TILE_CASES), ids=lambda t: f"{t[0]}x{t[1]}")
def test_emulated_cuda_kernel_runs_every_cta_tile(tile, dtype, fmt):
    library, case = emulated_library(), CTA_TILE_CASES[tile]
    n, c, h, w = case[0]
    assert tuple(torch.ops.hrnet_fast_emulated_cuda.fusion_branch_cta_tile(n * h * w, c)) == tile
    args = _inputs(case, dtype, "cpu", fmt)
    _check(library.fusion_branch(*args, "bilinear", False, True), args, "bilinear", False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_cpu_kernel_weights_over_several_blocks(dtype):
    """The CPU kernel multiplies the strided convs' weights in blocks of at most 512 KiB (kBlockBytes),
    each over every pixel tile of a band before the next: weights of 1.2 MiB in fp32 (96 channels,
    9 x 360 input channels) span several blocks, whose boundaries fall inside a path."""
    case = ((2, 96, 3, 5), [(2, 160, 6, 10), (2, 200, 5, 9)], [(2, 24, 2, 3)])
    for fmt in FORMATS:
        args = _inputs(case, dtype, "cpu", fmt)
        out = OpLibrary("hrnet_fast", "cpp").fusion_branch(*args, "nearest", False, True)
        _check(out, args, "nearest", False, what=str(fmt))


@pytest.mark.cuda
def test_the_cuda_kernel_names_a_map_on_another_device():
    """base on the CPU, a low map on the GPU: the call reaches the CUDA kernel (dispatch follows the GPU
    tensor), whose checks name the map (the device guard skips a CPU base)."""
    base, down, down_w, low, low_w, bias = _inputs("first", torch.float32, "cpu", torch.contiguous_format)
    low = [low[0].cuda(), *low[1:]]
    with pytest.raises(RuntimeError, match=r"low\[0\] is on cuda:0 but the first input is on cpu"):
        OpLibrary("hrnet_fast", "cpp").fusion_branch(base, down, down_w, low, low_w, bias, "nearest", False, True)


@pytest.mark.parametrize("target", TARGETS)
def test_opcheck_and_no_gradient(target):
    args = _inputs("middle", torch.float32, target.device, torch.contiguous_format)
    torch.library.opcheck(target.op.default, (*args, "nearest", False, True))
    base = args[0].requires_grad_()
    out = target.op(base, *args[1:], "nearest", False, True)
    with pytest.raises(RuntimeError, match="inference-only"):
        out.sum().backward()


def test_bad_inputs_are_refused_with_the_reason():
    base, down, down_w, low, low_w, bias = _inputs("middle", torch.float32, "cpu", torch.contiguous_format)
    with pytest.raises(ValueError, match=r"down\[0\] is \(12, 9\); a stride-2 conv of it is not base's \(7, 5\)"):
        fusion_branch(base, [down[0][..., :12, :], down[1]], down_w, low, low_w, bias)
    with pytest.raises(ValueError, match=r"low_weight\[0\] must have shape \(24, 40, 1, 1\)"):
        fusion_branch(base, down, down_w, low, [low_w[0][:, :39]], bias)
    with pytest.raises(TypeError, match=r"bias is torch.float16"):
        fusion_branch(base, down, down_w, low, low_w, bias.half())
    with pytest.raises(ValueError, match="2 down maps with 1 weights"):
        fusion_branch(base, down, down_w[:1], low, low_w, bias)


def test_more_maps_than_the_cpp_kernels_take_name_the_reference():
    """Nine down maps through hrnet_fast.ops: backend cpp refuses them, naming the reference, which runs them."""
    base, down, down_w, low, low_w, bias = _inputs("middle", torch.float32, "cpu", torch.contiguous_format)
    args = base, (down * 5)[:9], (down_w * 5)[:9], low, low_w, bias
    with pytest.raises(RuntimeError, match=r"at most 8 down and 8 low maps, got 9 and 1; use backend='reference'"):
        fusion_branch(*args, backend="cpp")
    _check(fusion_branch(*args, backend="reference"), args, "nearest", False)


@pytest.mark.parametrize("target", [t for t in TARGETS if t.values[0].name != "triton"])
def test_the_cpp_op_checks_its_own_inputs(target):
    """Called directly (not through hrnet_fast.ops), the C++ op refuses what its kernels cannot take."""
    base, down, down_w, low, low_w, bias = _inputs("middle", torch.float32, target.device, torch.contiguous_format)
    op = target.op
    with pytest.raises(RuntimeError, match=r"down\[1\] is 12x10; a stride-2 conv of it is not base's 7x5"):
        op(base, [down[0], down[1][:, :, :12]], down_w, low, low_w, bias, "nearest", False, True)
    with pytest.raises(RuntimeError, match=r"low_weight\[0\] must have shape \[24, 40, 1, 1\]"):
        op(base, down, down_w, low, [low_w[0][:, :39]], bias, "nearest", False, True)
    with pytest.raises(RuntimeError, match=r"bias is Half on cpu, base is Float on cpu"):
        op(base, down, down_w, low, low_w, bias.half(), "nearest", False, True)
    with pytest.raises(RuntimeError, match="2 down maps with 1 weights"):
        op(base, down, down_w[:1], low, low_w, bias, "nearest", False, True)
    with pytest.raises(RuntimeError, match="at most 8 down and 8 low maps, got 9"):
        op(base, (down * 5)[:9], (down_w * 5)[:9], low, low_w, bias, "nearest", False, True)
    with pytest.raises(RuntimeError, match="upsampling mode must be 'nearest' or 'bilinear'"):
        op(base, down, down_w, low, low_w, bias, "area", False, True)
    with pytest.raises(RuntimeError, match=r"low\[0\] must be 4-D"):
        op(base, down, down_w, [low[0][0]], low_w, bias, "nearest", False, True)
    if torch.float64 not in target.dtypes:
        with pytest.raises(RuntimeError, match="takes float32, float16, bfloat16 tensors, got Double"):
            op(*_double([base, down, down_w, low, low_w, bias]), "nearest", False, True)


@pytest.mark.parametrize(
    "target", [t for t in TARGETS if t.values[0].backend and torch.float64 not in t.values[0].dtypes]
)
def test_float64_runs_the_reference_with_a_debug_line(target, caplog):
    args = _double(_inputs("first", torch.float32, target.device, torch.contiguous_format))
    with caplog.at_level("DEBUG", logger="hrnet_fast.ops.registry"):
        out = fusion_branch(*args, backend=target.backend)
    torch.testing.assert_close(out, fusion_branch_reference(*args, "nearest", False, True))
    assert "not torch.float64" in caplog.text
