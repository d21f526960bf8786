"""One rule for judging a fused result against the reference, used by every test and GPU check.

Each judgement takes ``got`` (the fused result), ``ref`` (the reference implementation's result in
the same dtype) and ``exact`` (the reference computed in float64), and measures errors against
``exact`` (the max, or the mean, of ``|x - exact|``):

- full precision (float32, float64) where the fused kernel and the reference round alike:
  ``error <= TOLERANCE[dtype] * scale`` (relative to the data's scale, since sums cancel), with
  ``scale = max(1, max |exact|)``; a kernel with long dot products may pass its own tolerance;
- low precision (float16, bfloat16), and full precision where rounding compounds (whole-model
  gradients, deep engines): ``error <= 2 * (the reference's own error) + floor``, the
  flash-attention rule: the fused result may be at most twice as far from the truth as the
  reference implementation is at that dtype (fusing rounds once where the reference rounds after
  every op, so it is usually closer). ``floor`` defaults to one unit of roundoff at the data's
  magnitude (``eps(dtype)`` times the max, or mean, of ``|exact|``), for results the reference
  gets exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-12}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    error: float
    bound: float
    rule: str

    def __str__(self) -> str:
        return f"error {self.error:.3g} {'<=' if self.ok else '>'} {self.bound:.3g} ({self.rule})"


def judge(
    got: Tensor,
    ref: Tensor,
    exact: Tensor,
    *,
    tol: float | None = None,
    twice_reference: bool | None = None,
    floor: float | None = None,
    mean: bool = False,
) -> Verdict:
    """Judge ``got`` by the rule above. ``twice_reference`` picks the rule (default: by dtype, the
    2x rule for float16/bfloat16); ``tol`` replaces the full-precision tolerance; ``floor`` the 2x
    rule's floor; ``mean`` measures mean instead of max errors (whole-model outputs)."""
    if got.shape != exact.shape or got.dtype != ref.dtype:
        return Verdict(
            False, float("inf"), 0.0, f"got {got.dtype} {tuple(got.shape)}, expected {ref.dtype} {tuple(exact.shape)}"
        )
    if got.isnan().any() and not exact.isnan().any():
        return Verdict(False, float("nan"), 0.0, "NaN elements (unwritten or invalid)")
    reduce = torch.mean if mean else torch.max
    error = reduce((got.double() - exact).abs()).item()
    scale = max(1.0, exact.abs().max().item()) if exact.numel() else 1.0
    if twice_reference is None:
        twice_reference = got.dtype not in TOLERANCE
    if not twice_reference:
        tolerance = TOLERANCE[got.dtype] if tol is None else tol
        return Verdict(error <= tolerance * scale, error, tolerance * scale, f"{got.dtype} tolerance {tolerance:g}")
    own = reduce((ref.double() - exact).abs()).item()
    if floor is None:
        floor = torch.finfo(got.dtype).eps * reduce(exact.abs()).item()
    bound = 2 * own + floor
    return Verdict(error <= bound, error, bound, f"2x the reference's own {got.dtype} error {own:.3g}")


def assert_matches(got: Tensor, ref: Tensor, exact: Tensor, what: str = "", **options) -> None:
    """Assert :func:`judge` (same options); the message says what, the error and the bound."""
    verdict = judge(got, ref, exact, **options)
    assert verdict.ok, f"{what}: {verdict}" if what else str(verdict)
