"""Model-level benchmark: one HRNet forward per backend against the reference, side by side."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import HRNet
from ..ops import available_backends
from .timer import time_fn


@dataclass(frozen=True)
class ModelResult:
    backend: str
    arch: str
    head: str
    batch: int
    size: tuple[int, int]
    dtype: str
    ms: float
    img_per_s: float
    speedup: float  # reference time / this time, measured in the same run
    max_abs_err: float  # against the reference backend's output


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def bench_model(
    arch: str = "w32",
    head: str = "pose",
    *,
    batch: int = 1,
    size: tuple[int, int] = (256, 192),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    backends: list[str] | None = None,
    warmup: int = 2,
    iters: int = 5,
    progress=None,
) -> list[ModelResult]:
    """Time ``HRNet(arch, head)`` in eval mode on a random batch with each backend (reference first)."""
    device = torch.device(device)
    names = backends or available_backends(device)
    names = ["reference"] + [b for b in names if b != "reference"]
    model = HRNet(arch, head=head).eval().to(device=device, dtype=dtype)
    x = torch.randn(batch, 3, *size, device=device, dtype=dtype)
    results, ref_out, ref_s = [], None, None
    for name in names:
        if progress:
            progress(f"{arch} {head} batch {batch} {tuple(size)} {str(dtype).removeprefix('torch.')}: {name}")
        model.backend = name
        with torch.inference_mode():
            out = _first(model(x)).float()
            timing = time_fn(lambda: model(x), device, warmup=warmup, iters=iters)
        if ref_out is None:
            ref_out, ref_s = out, timing.median_s
        results.append(
            ModelResult(
                backend=name,
                arch=arch,
                head=head,
                batch=batch,
                size=tuple(size),
                dtype=str(dtype).removeprefix("torch."),
                ms=timing.median_ms,
                img_per_s=batch / timing.median_s,
                speedup=ref_s / timing.median_s,
                max_abs_err=float((out - ref_out).abs().max()),
            )
        )
    return results
