"""Second-order gradients through the ops on every backend that runs on the CPU (reference, cpp, and
triton under the interpreter): the backward ops carry their own derivative (linear in the incoming
gradient), so double backward through a fused op equals double backward through the reference.

float64 ``gradgradcheck`` (finite differences) runs where the backend's kernels take float64 (the
reference and cpp); the Triton kernels compute in fp32, so there second-order gradients in float32
are judged against the float64 reference's (the tests' one rule, :mod:`hrnet_fast.testing`).
"""

from __future__ import annotations

import pytest
import torch

from hrnet_fast import available_backends
from hrnet_fast.ops import registry, upsample_concat, upsample_sum
from hrnet_fast.testing import assert_matches

BACKENDS = available_backends("cpu")
# mode, align_corners, relu, base shape, low sizes, number of same addends
SUM_CASES = [
    ("nearest", False, True, (2, 3, 9, 7), [(5, 4), (2, 2)], 1),
    ("bilinear", True, False, (1, 4, 6, 5), [(3, 3), (7, 6)], 0),
    ("bilinear", False, True, (1, 2, 8, 6), [(4, 3)], 2),
]
CONCAT_SHAPES = [(2, 3, 7, 6), (2, 2, 4, 3), (2, 1, 2, 2)]


def _fresh(shapes, dtype):
    return [torch.randn(s, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def _sum_fn(case, backend):
    mode, ac, relu, _, _, num_same = case

    def fn(base, *rest):
        same, low = list(rest[:num_same]), list(rest[num_same:])
        return upsample_sum(base, same, low, mode=mode, align_corners=ac, relu=relu, backend=backend)

    return fn


def _sum_shapes(case):
    _, _, _, shape, low_hw, num_same = case
    return [shape] * (1 + num_same) + [(*shape[:2], *hw) for hw in low_hw]


def _concat_fn(backend):
    return lambda *xs: upsample_concat(list(xs), mode="bilinear", align_corners=False, backend=backend)


def _second_order(fn, inputs, v):
    """d/dx of <d/dx sum(f(x)^2), v>: it flows through the backward op's own derivative."""
    out = fn(*inputs)
    first = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    return torch.autograd.grad(sum((g * w.to(g.dtype)).sum() for g, w in zip(first, v, strict=True)), inputs)


def _check_second_order(fn, reference_fn, shapes):
    """fn's second-order gradients in float32 against the reference's in float32 and float64."""
    inputs = _fresh(shapes, torch.float32)
    v = [torch.rand(s, dtype=torch.float64) * 2 - 1 for s in shapes]
    got = _second_order(fn, inputs, v)
    want = _second_order(reference_fn, [t.detach().requires_grad_() for t in inputs], v)
    exact = _second_order(reference_fn, [t.detach().double().requires_grad_() for t in inputs], v)
    assert all(g.abs().max() > 0 for g in exact), "a case whose second-order gradients vanish tests nothing"
    for k, (g, r, e) in enumerate(zip(got, want, exact, strict=True)):
        assert_matches(g, r, e, f"second-order gradient of input {k}", tol=1e-5)


def _takes_float64(backend: str) -> bool:
    return registry.unsupported_reason("upsample_sum", backend, torch.empty(0, dtype=torch.float64)) is None


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "reference" or _takes_float64(b)])
@pytest.mark.parametrize("case", SUM_CASES, ids=["nearest", "bilinear-ac", "bilinear"])
def test_upsample_sum_gradgradcheck_in_float64(backend, case):
    assert torch.autograd.gradgradcheck(_sum_fn(case, backend), tuple(_fresh(_sum_shapes(case), torch.float64)))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "reference" or _takes_float64(b)])
def test_upsample_concat_gradgradcheck_in_float64(backend):
    assert torch.autograd.gradgradcheck(_concat_fn(backend), tuple(_fresh(CONCAT_SHAPES, torch.float64)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SUM_CASES, ids=["nearest", "bilinear-ac", "bilinear"])
def test_upsample_sum_second_order_gradients_match_the_reference(backend, case):
    _check_second_order(_sum_fn(case, backend), _sum_fn(case, "reference"), _sum_shapes(case))


@pytest.mark.parametrize("backend", BACKENDS)
def test_upsample_concat_second_order_gradients_match_the_reference(backend):
    _check_second_order(_concat_fn(backend), _concat_fn("reference"), CONCAT_SHAPES)
