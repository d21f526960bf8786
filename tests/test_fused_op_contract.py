"""The contract every fused backend fills: each op of the registry defined as a custom op by
``OpLibrary`` from its one schema, with the op's fake implementation, autograd formula (including
double backward) and autocast rule. Here the custom ops run the reference compositions, so these
tests check the contract itself (fake shapes and layouts, gradients, opcheck, torch.compile) once for
all backends.
"""

from __future__ import annotations

import pytest
import torch

from hrnet_fast.ops import registry
from hrnet_fast.ops import upsample_concat_op as concat_mod
from hrnet_fast.ops import upsample_sum_op as sum_mod


def _fresh(fn):
    """``fn`` for a custom op, which may not return one of its inputs."""

    def run(*args):
        out = fn(*args)
        inputs = [t for a in args for t in (a if isinstance(a, list) else [a])]
        return out.clone() if any(out is t for t in inputs) else out

    return run


def _define() -> registry.OpLibrary:
    library = registry.OpLibrary("hrnet_fast_contract_test", "ref")
    for op, spec in registry.op_specs().items():
        library.define(op, {"CompositeExplicitAutograd": _fresh(spec.reference)})
    return library


OPS = _define()

CASES = [
    ("nearest", False, True, (1, 4, 9, 7), [(5, 4), (3, 2)], 1),
    ("bilinear", False, True, (2, 3, 16, 12), [(8, 6)], 0),
    ("bilinear", True, False, (1, 2, 7, 5), [(4, 3), (2, 2), (1, 1)], 2),
]


def _sum_inputs(shape, low_hw, num_same, fmt, dtype=torch.float64):
    n, c = shape[:2]
    make = lambda s: torch.randn(s, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()  # noqa: E731
    return make(shape), [make(shape) for _ in range(num_same)], [make((n, c, *hw)) for hw in low_hw]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("mode", "ac", "relu", "shape", "low_hw", "num_same"), CASES)
def test_upsample_sum_contract_gradients_and_opcheck(mode, ac, relu, shape, low_hw, num_same, fmt):
    base, same, low = _sum_inputs(shape, low_hw, num_same, fmt)
    out = OPS.upsample_sum(base, same, low, mode, ac, relu)
    ref = sum_mod.upsample_sum_reference(base, same, low, mode, ac, relu)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [base, *same, *low], g)
    want = torch.autograd.grad(ref, [base, *same, *low], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    torch.library.opcheck(OPS.upsample_sum.default, (base, same, low, mode, ac, relu))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("ac", [False, True])
def test_upsample_concat_contract_gradients_and_opcheck(ac, fmt):
    xs = [
        torch.randn(s, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
        for s in [(2, 3, 11, 9), (2, 4, 6, 5), (2, 2, 3, 3)]
    ]
    out = OPS.upsample_concat(xs, "bilinear", ac)
    ref = concat_mod.upsample_concat_reference(xs, "bilinear", ac)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, xs, g), torch.autograd.grad(ref, xs, g), strict=True):
        torch.testing.assert_close(a, b)
    torch.library.opcheck(OPS.upsample_concat.default, (xs, "bilinear", ac))


@pytest.mark.parametrize(("mode", "ac", "relu", "shape", "low_hw", "num_same"), CASES)
def test_upsample_sum_contract_double_backward(mode, ac, relu, shape, low_hw, num_same):
    base, same, low = _sum_inputs(shape, low_hw, num_same, torch.contiguous_format)
    fn = lambda *ts: OPS.upsample_sum(ts[0], list(ts[1 : 1 + num_same]), list(ts[1 + num_same :]), mode, ac, relu)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (base, *same, *low))


def test_upsample_concat_contract_double_backward():
    xs = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in [(1, 2, 7, 6), (1, 3, 4, 3), (1, 1, 2, 2)]]
    assert torch.autograd.gradgradcheck(lambda *ts: OPS.upsample_concat(list(ts), "bilinear", True), tuple(xs))


def test_contract_ops_compile_with_no_graph_break():
    def f(base, low, xs):
        return (
            OPS.upsample_sum(base, [], low, "nearest", False, True).sum()
            + OPS.upsample_concat(xs, "bilinear", False).sum()
        )

    base, _, low = _sum_inputs((1, 2, 8, 8), [(4, 4)], 0, torch.contiguous_format, torch.float32)
    xs = [torch.randn(1, 2, 8, 8, requires_grad=True), torch.randn(1, 3, 4, 4, requires_grad=True)]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(base, low, xs), f(base, low, xs))
    compiled(base, low, xs).backward()
    assert base.grad is not None and low[0].grad is not None and xs[1].grad is not None


def test_autocast_promotes_mixed_inputs_like_the_reference_composition():
    base = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)
    low = [torch.randn(1, 4, 4, 4)]
    xs = [torch.randn(1, 2, 8, 8, dtype=torch.bfloat16), torch.randn(1, 3, 4, 4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = sum_mod.upsample_sum_reference(base, [], low, "nearest", False, True)
        out = OPS.upsample_sum(base, [], low, "nearest", False, True)
        surface = sum_mod.upsample_sum(base, low=low)
        cat = OPS.upsample_concat(xs, "bilinear", False)
        cat_ref = concat_mod.upsample_concat_reference(xs, "bilinear", False)
    assert ref.dtype == out.dtype == surface.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(surface, ref)
    assert cat.dtype == cat_ref.dtype == torch.float32
    torch.testing.assert_close(cat, cat_ref)
    with pytest.raises(TypeError, match="cast them to one dtype"):
        sum_mod.upsample_sum(base, low=low)  # outside autocast, mixed dtypes are an error
