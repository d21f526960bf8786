"""Segmentation end to end: one full-resolution image through :class:`hrnet_fast.seg.SegEstimator`.

Each runner predicts the label map of the same random 1024x2048 uint8 image (normalization, forward,
logits upsampled to the image, exp, argmax), one image per call as the official test does, with the
same model in every run: seeded random weights and BatchNorm statistics (a freshly initialized
model labels almost every pixel alike, which would hide label changes):

- ``eager-fp32``: the official-style baseline, the reference backend in float32, NCHW;
- each backend in the run's dtype and layout (the baseline's own configuration is not timed twice);
- ``optimize``: :func:`hrnet_fast.optimize` of the model in the run's dtype (channels_last; CUDA graphs).

``speedup`` is against ``eager-fp32`` measured in the same run (interleaved rounds); ``max_abs_err``
is the fraction of pixels whose label differs from the baseline's; ``mem_mb`` the peak memory while
the runner was built and predicted once, with no other runner alive: on CUDA the allocator's peak, on
a CPU the whole process's peak resident set (VmHWM, reset before; the base model's weights included).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from ..models import HRNet, optimize
from ..seg.estimator import SegEstimator
from ..testing import randomize_batchnorm_
from .suites import OPTIMIZE, Result, Settings
from .timer import time_interleaved

BASELINE = "eager-fp32"
ARCH = "w48"
SIZE = (1024, 2048)  # a Cityscapes image


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[list[float | None]]:
    """Yields a one-item list that holds the peak memory in MB of the block once it ends (None where
    the platform cannot tell)."""
    found: list[float | None] = [None]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set (Linux)
    yield found
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        found[0] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        with contextlib.suppress(OSError, StopIteration), open("/proc/self/status") as f:
            found[0] = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def _runner(name: str, model: HRNet, settings: Settings) -> torch.nn.Module:
    """The model ``name`` runs: a copy of ``model`` (whose backend is the automatic choice)."""
    if name == OPTIMIZE:
        return optimize(model, dtype=settings.dtype)
    baseline = name == BASELINE
    copy = HRNet(model.arch, head="seg", backend="reference" if baseline else name)
    copy.load_state_dict(model.state_dict())
    copy = copy.eval().to(device=settings.device, dtype=torch.float32 if baseline else settings.dtype)
    return copy.to(memory_format=torch.channels_last) if settings.channels_last and not baseline else copy


def runner_names(settings: Settings, backends: Sequence[str]) -> list[str]:
    """The baseline, each backend unless it would repeat the baseline, then the engine."""
    same_as_baseline = settings.dtype == torch.float32 and not settings.channels_last
    return [BASELINE, *(b for b in backends if not (b == "reference" and same_as_baseline)), OPTIMIZE]


def bench_seg_end_to_end(
    settings: Settings,
    *,
    backends: Sequence[str],
    arch: str = ARCH,
    size: tuple[int, int] = SIZE,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Time ``arch`` seg on one ``size`` image per runner (see the module docstring), with peak memory.

    First each runner alone predicts once (its labels, its peak memory, a warm-up); then the runners
    take turns until ``settings.rule`` is met for all of them, so that a slower or faster spell of a
    shared machine falls on all of them alike. The model's weights come from seed 0 on a forked
    random stream: the caller's stream is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _seg_rows(settings, backends, arch, size, progress)


def _seg_rows(settings: Settings, backends, arch: str, size: tuple[int, int], progress) -> list[Result]:
    model = randomize_batchnorm_(HRNet(arch, head="seg")).eval().to(settings.device)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    names = runner_names(settings, backends)

    def predictor(name: str) -> Callable[[], torch.Tensor]:
        estimator = SegEstimator(_runner(name, model, settings), crop_size=size, max_batch=1)
        return lambda: estimator.predict(image)

    labels, memory = {}, {}
    for name in names:
        if progress:
            progress(f"seg end to end: {name}")
        with peak_memory(settings.device) as peak:
            labels[name] = predictor(name)()
        memory[name] = peak[0]
    timings = time_interleaved({name: predictor(name) for name in names}, settings.device, warmup=0, rule=settings.rule)
    base = timings[BASELINE]
    case = f"seg {arch} {size[0]}x{size[1]} end to end, {settings.label}"
    return [
        Result.timed(
            "seg",
            case,
            name,
            timing,
            None if name == BASELINE else base,
            max_abs_err=float((labels[name] != labels[BASELINE]).float().mean()),
            img_per_s=1 / timing.median_s,
            mem_mb=memory[name],
        )
        for name, timing in timings.items()
    ]
