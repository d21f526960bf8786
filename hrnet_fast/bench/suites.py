"""Benchmark suites: the fusion ops and whole models, every backend side by side with the reference.

Each result carries its median time and spread (interquartile range / median) over the timed calls
(as many as :class:`~.timer.StopRule` asks for), the speedup over the reference measured in the
same run with its ~95% interval (from the two medians' intervals), the largest deviation from the
reference's output, and a throughput: GB/s (with the share of the device's copy bandwidth, also
measured in the run) for ops, images/s for models. ``"compile"`` in a backend list means
``torch.compile`` of the reference, the strongest plain-PyTorch peer.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models import HRNet, optimize
from ..nn import CudaGraphCache, MultiResolutionFusion
from ..ops import available_backends, upsample_concat, upsample_concat_reference, upsample_sum, upsample_sum_reference
from .memory import step_memory_bytes
from .peers import PEERS, PeerUnavailable
from .shapes import SumShapes, branch_sizes, concat_elements, concat_shapes, fusion_shapes, stage_widths
from .timer import Rotation, StopRule, Timing, time_fn, time_interleaved

COMPILE = "compile"  # torch.compile(reference) as a pseudo-backend
CUDA_GRAPH = "cuda-graph"  # the eager reference replayed as a CUDA graph
OPTIMIZE = "optimize"  # hrnet_fast.optimize(): our inference engine
OPTIMIZE_WORKERS = "optimize-workers"  # optimize(cpu_workers=True): a CPU batch split over worker threads
# Untimed calls of a model-suite engine right before each of its timed calls (time_interleaved's
# settle): each engine is timed in its steady state, not refilling what the engine before it evicted.
SETTLE = 1


@dataclass(frozen=True)
class Result:
    suite: str  # "op", "model" or "train"
    case: str
    backend: str
    ms: float | None  # median; None: the engine could not run here (``note`` says why)
    spread: float | None  # interquartile range / median of the timed calls
    speedup: float | None  # the reference's median / this median
    max_abs_err: float | None
    img_per_s: float | None = None
    gb_per_s: float | None = None
    pct_of_copy: float | None = None
    mem_mb: float | None = None  # training: activation memory of one step (see bench.memory)
    vs_best_peer: float | None = None  # models: the fastest peer's time / this row's time
    setup_s: float | None = None  # models: seconds to build the engine (compile, export), not timed
    note: str | None = None  # why a peer has no timing (not installed, device, dtype)
    samples: int | None = None  # timed calls
    speedup_low: float | None = None  # the speedup's ~95% interval, from both medians' intervals
    speedup_high: float | None = None

    @classmethod
    def timed(cls, suite: str, case: str, backend: str, timing: Timing, ref: Timing | None, **fields) -> Result:
        """The row of ``backend`` timed as ``timing``: median, spread, samples, and the speedup over
        ``ref`` with its interval from both medians' intervals (``ref=None``: the row is the baseline
        itself, speedup 1 without an interval)."""
        interval = (None, None) if ref is None else (ref.low_s / timing.high_s, ref.high_s / timing.low_s)
        return cls(
            suite=suite,
            case=case,
            backend=backend,
            ms=timing.median_ms,
            spread=timing.spread,
            speedup=1.0 if ref is None else ref.median_s / timing.median_s,
            samples=timing.samples,
            speedup_low=interval[0],
            speedup_high=interval[1],
            **fields,
        )

    @property
    def key(self) -> tuple[str, str, str]:
        return self.suite, self.case, self.backend

    @property
    def within_noise(self) -> bool:
        """The difference from the reference is within the noise: the speedup's interval holds 1."""
        if self.backend == "reference" or self.speedup_low is None or self.speedup_high is None:
            return False
        return self.speedup_low <= 1 <= self.speedup_high


@dataclass(frozen=True)
class Settings:
    device: torch.device
    dtype: torch.dtype
    channels_last: bool = False
    warmup: int = 3
    rule: StopRule = field(default_factory=StopRule)

    def tensor(self, shape: Sequence[int]) -> Tensor:
        t = torch.randn(tuple(shape), device=self.device, dtype=self.dtype)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def time(self, fn: Callable[[], object]) -> Timing:
        return time_fn(fn, self.device, warmup=self.warmup, rule=self.rule)

    @property
    def label(self) -> str:
        return f"{str(self.dtype).removeprefix('torch.')} {'channels_last' if self.channels_last else 'NCHW'}"


def default_backends(device: torch.device) -> list[str]:
    """Every backend available for ``device``, reference first."""
    return ["reference"] + [b for b in available_backends(device) if b != "reference"]


def max_abs_err(out, ref) -> float:
    outs = out if isinstance(out, tuple | list) else (out,)
    refs = ref if isinstance(ref, tuple | list) else (ref,)
    return max(float((o.float() - r.float()).abs().max()) for o, r in zip(outs, refs, strict=True))


def _compare(
    suite: str,
    case: str,
    backends: Sequence[str],
    run: Callable[[str], Callable[[], object]],
    settings: Settings,
    progress: Callable[[str], None] | None,
    throughput: Callable[[float], dict],
) -> list[Result]:
    """Time ``run(backend)()`` for the reference and each backend; errors against the reference.
    Training suites' runners return (step, extra) pairs: ``step()`` gives the loss, ``extra`` more fields.
    ``progress(what)`` is called as each backend's row starts."""
    results, ref_out, ref = [], None, None
    for name in ["reference"] + [b for b in backends if b != "reference"]:
        if progress:
            progress(f"{suite} {case}: {name}")
        fn, extra = run(name), {}
        if isinstance(fn, tuple):
            fn, extra = fn
        with torch.inference_mode(suite != "train"):
            out = fn()
            if ref_out is None:
                ref_out = out
            timing = settings.time(fn)
        ref = ref or timing
        results.append(
            Result.timed(
                suite,
                case,
                name,
                timing,
                ref,
                max_abs_err=max_abs_err(out, ref_out),
                **throughput(timing.median_s),
                **extra,
            )
        )
    return results


def sum_impl(backend: str) -> Callable:
    if backend == COMPILE:
        return torch.compile(upsample_sum_reference, dynamic=False)
    return lambda base, same, low, mode, ac, relu: upsample_sum(
        base, same, low, mode=mode, align_corners=ac, relu=relu, backend=backend
    )


def concat_impl(backend: str) -> Callable:
    if backend == COMPILE:
        return torch.compile(upsample_concat_reference, dynamic=False)
    return lambda xs, mode, ac: upsample_concat(xs, mode=mode, align_corners=ac, backend=backend)


def make_sum_inputs(shapes: Sequence[SumShapes], settings: Settings) -> list[tuple[Tensor, list[Tensor], list[Tensor]]]:
    """Fresh random (base, same, low) operands for each upsample_sum call of a fusion step."""
    return [
        (
            settings.tensor(s.base),
            [settings.tensor(s.base) for _ in range(s.num_same)],
            [settings.tensor(t) for t in s.low],
        )
        for s in shapes
    ]


def _op_throughput(nbytes: int, copy_bw: float | None) -> Callable[[float], dict]:
    def throughput(seconds: float) -> dict:
        bw = nbytes / seconds
        return {"gb_per_s": bw / 1e9, "pct_of_copy": 100 * bw / copy_bw if copy_bw else None}

    return throughput


def bench_fusion_sums(
    arch: str,
    size: tuple[int, int],
    batch: int,
    settings: Settings,
    *,
    mode: str = "nearest",
    align_corners: bool = False,
    backends: Sequence[str] | None = None,
    copy_bw: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """A stage-4 fusion step's ``upsample_sum`` calls (one per output branch), at the arch's shapes."""
    shapes: list[SumShapes] = fusion_shapes(arch, size, batch)
    nbytes = sum(s.elements() for s in shapes) * settings.dtype.itemsize

    rotation = Rotation(lambda: make_sum_inputs(shapes, settings), nbytes, settings.device)

    def run(backend: str):
        impl = sum_impl(backend)
        rotation.restart()  # the output compared with the reference's comes from the same inputs
        return lambda: [impl(b, s, lo, mode, align_corners, True) for b, s, lo in rotation()]

    ac = " align_corners" if align_corners else ""
    case = f"upsample_sum {arch} stage4 {size[0]}x{size[1]} b{batch} {mode}{ac} {settings.label}"
    names = backends or default_backends(settings.device)
    return _compare("op", case, names, run, settings, progress, _op_throughput(nbytes, copy_bw))


def bench_fusion_step(
    arch: str,
    size: tuple[int, int],
    batch: int,
    settings: Settings,
    *,
    mode: str = "nearest",
    backends: Sequence[str] | None = None,
    copy_bw: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """The whole stage-4 fusion step (MultiResolutionFusion in eval, every output branch): level 2 (BN
    folded, one fused ``fusion_branch`` call per branch) on backends with that kernel, level 1 on
    the others; GB/s counts each branch read once and each output written once."""
    widths = stage_widths(arch, 4)
    shapes = [(batch, c, *hw) for c, hw in zip(widths, branch_sizes(*size, len(widths)), strict=True)]
    nbytes = 2 * sum(b * c * h * w for b, c, h, w in shapes) * settings.dtype.itemsize
    rotation = Rotation(lambda: [settings.tensor(s) for s in shapes], nbytes, settings.device)
    fusion = MultiResolutionFusion(widths, upsample=mode).to(settings.device, settings.dtype).eval()

    def run(backend: str):
        module = copy.deepcopy(fusion)
        module.backend = "reference" if backend == COMPILE else backend
        fn = torch.compile(module, dynamic=False) if backend == COMPILE else module
        rotation.restart()
        return lambda: fn(rotation())

    case = f"fusion step {arch} stage4 {size[0]}x{size[1]} b{batch} {mode} {settings.label}"
    names = backends or default_backends(settings.device)
    return _compare("op", case, names, run, settings, progress, _op_throughput(nbytes, copy_bw))


def bench_seg_concat(
    arch: str,
    size: tuple[int, int],
    batch: int,
    settings: Settings,
    *,
    align_corners: bool = False,
    backends: Sequence[str] | None = None,
    copy_bw: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """The seg head's ``upsample_concat`` of the four stage-4 branches (bilinear)."""
    shapes = concat_shapes(arch, size, batch)
    nbytes = concat_elements(shapes) * settings.dtype.itemsize
    rotation = Rotation(lambda: [settings.tensor(s) for s in shapes], nbytes, settings.device)

    def run(backend: str):
        impl = concat_impl(backend)
        rotation.restart()
        return lambda: impl(rotation(), "bilinear", align_corners)

    case = f"upsample_concat {arch} seg {size[0]}x{size[1]} b{batch} {settings.label}"
    names = backends or default_backends(settings.device)
    return _compare("op", case, names, run, settings, progress, _op_throughput(nbytes, copy_bw))


def _compiled(model: torch.nn.Module, x: Tensor) -> Callable[[], object]:
    """torch.compile of the reference model (default mode, no freezing), compiled by a first call."""
    model.backend = "reference"
    compiled = torch.compile(model, dynamic=False)
    with torch.inference_mode():
        compiled(x)
    return lambda: compiled(x)


def _cuda_graph(model: torch.nn.Module, x: Tensor) -> Callable[[], object]:
    if x.device.type != "cuda":
        raise PeerUnavailable("CUDA graphs need a CUDA device")
    model.backend = "reference"
    graphs = CudaGraphCache(model)
    return lambda: graphs(x)


def _optimized(model: HRNet, x: Tensor) -> Callable[[], object]:
    model.backend = None  # the engine picks the fastest available backend; its layout is channels_last
    engine = optimize(model, dtype=x.dtype)
    return lambda: engine(x)


def _optimized_on_workers(model: HRNet, x: Tensor) -> Callable[[], object]:
    if x.device.type != "cpu" or x.shape[0] == 1:
        raise PeerUnavailable("worker threads split CPU batches of more than one image")
    model.backend = None
    engine = optimize(model, dtype=x.dtype, cpu_workers=True)
    return lambda: engine(x)


# Whole-model runners timed beside the backends: our engine and its peers. Each builds its engine
# from its own copy of the model (compile and export time are reported apart from the timings).
MODEL_RUNNERS: dict[str, Callable[[HRNet, Tensor], Callable[[], object]]] = {
    OPTIMIZE: _optimized,
    OPTIMIZE_WORKERS: _optimized_on_workers,
    CUDA_GRAPH: _cuda_graph,
    COMPILE: _compiled,
    **PEERS,
}
# The rows that count as peers of optimize() ("vs best peer").
PEER_NAMES = (CUDA_GRAPH, COMPILE, *PEERS)


def model_peers(device: torch.device, peers: Sequence[str] = (), batch: int = 1) -> list[str]:
    """The engine (also with worker threads for a CPU batch of several images; CUDA graphs on CUDA),
    then ``peers`` (see :data:`hrnet_fast.bench.peers.PEERS`)."""
    if device.type == "cuda":
        return [OPTIMIZE, CUDA_GRAPH, *peers]
    return [OPTIMIZE, *([OPTIMIZE_WORKERS] if batch > 1 else []), *peers]


def model_runner(name: str, model: HRNet, x: Tensor) -> Callable[[], object]:
    """One forward of ``model`` on ``x`` by the runner ``name`` (or the model with backend ``name``);
    built from ``model``, which it may change. Raises PeerUnavailable where it cannot run."""
    if name in MODEL_RUNNERS:
        return MODEL_RUNNERS[name](model, x)
    model.backend = name
    return functools.partial(model, x)


def bench_model(
    arch: str,
    head: str,
    size: tuple[int, int],
    batch: int,
    settings: Settings,
    *,
    backends: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """One eval-mode forward of ``HRNet(arch, head)`` per backend and per runner of
    :data:`MODEL_RUNNERS` named in ``backends``, all from the same weights and input batch.

    Every engine is built first (its build time is ``setup_s``), then all are timed in interleaved
    rounds until ``settings.rule`` is met for each (:func:`~.timer.time_interleaved`). A peer that
    cannot run here is a row with a ``note``. ``vs_best_peer`` is the fastest peer's time over the
    row's; errors are against the reference backend's output in the same dtype.
    """
    base = HRNet(arch, head=head).eval().to(device=settings.device, dtype=settings.dtype)
    if settings.channels_last:
        base = base.to(memory_format=torch.channels_last)
    x = settings.tensor((batch, 3, *size))
    case = f"{head} {arch} {size[0]}x{size[1]} b{batch} {settings.label}"
    names = list(dict.fromkeys(["reference", *(backends or default_backends(settings.device))]))

    runners, setup_s, notes, errors = {}, {}, {}, {}
    ref_out = None
    for name in names:
        if progress:
            progress(f"model {case}: building {name}")
        t0 = time.perf_counter()
        try:
            runners[name] = model_runner(name, copy.deepcopy(base), x)
        except PeerUnavailable as exc:
            notes[name] = str(exc)
            continue
        setup_s[name] = time.perf_counter() - t0
        with torch.inference_mode():
            out = runners[name]()
            ref_out = out if ref_out is None else ref_out
            errors[name] = max_abs_err(out, ref_out)  # before a later call may reuse the output buffers
    if progress:
        progress(f"model {case}: interleaved rounds of {len(runners)} engines")
    with torch.inference_mode():
        timings = time_interleaved(runners, settings.device, warmup=settings.warmup, rule=settings.rule, settle=SETTLE)
    peers = [timings[n].median_s for n in timings if n in PEER_NAMES]
    best_peer = min(peers) if peers else None
    ref = timings["reference"]
    results = []
    for name in names:
        if name in notes:
            results.append(Result("model", case, name, None, None, None, None, note=notes[name]))
            continue
        t = timings[name]
        results.append(
            Result.timed(
                "model",
                case,
                name,
                t,
                ref,
                max_abs_err=errors[name],
                img_per_s=batch / t.median_s,
                vs_best_peer=best_peer / t.median_s if best_peer else None,
                setup_s=setup_s[name],
            )
        )
    return results


def _loss_fn(head: str, out) -> Callable[[object], Tensor]:
    """A loss of the head's usual kind against a fixed random target shaped like ``out``."""
    if head in ("seg", "cls"):
        classes = out.shape[1]
        target = torch.randint(0, classes, (out.shape[0], *out.shape[2:]), device=out.device)
        return lambda y: torch.nn.functional.cross_entropy(y.float(), target)
    outs = out if isinstance(out, tuple) else (out,)
    targets = [torch.randn_like(o, dtype=torch.float32) for o in outs]
    return lambda y: sum(
        torch.nn.functional.mse_loss(o.float(), t)
        for o, t in zip(y if isinstance(y, tuple) else (y,), targets, strict=True)
    )


def bench_train(
    arch: str,
    head: str,
    size: tuple[int, int],
    batch: int,
    settings: Settings,
    *,
    backends: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """One training step (forward, backward, SGD step) per backend, from the same weights and batch.

    Weights stay float32; a float16/bfloat16 ``settings.dtype`` means autocast to it (with a
    GradScaler for float16). ``max_abs_err`` is the first step's loss difference from the reference
    (every backend starts from the same weights); ``mem_mb`` the step's activation memory.
    """
    device = settings.device
    amp = settings.dtype if settings.dtype != torch.float32 else None
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    initial = HRNet(arch, head=head).to(device=device, memory_format=memory_format).state_dict()
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=memory_format)
    with torch.no_grad():
        loss_fn = _loss_fn(head, HRNet(arch, head=head).to(device).eval()(x))

    def run(backend: str):
        model = HRNet(arch, head=head, backend=backend).to(device=device, memory_format=memory_format).train()
        model.load_state_dict(initial)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

        def forward() -> Tensor:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                return scaler.scale(loss_fn(model(x)))

        def step() -> Tensor:
            opt.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
            scaler.step(opt)
            scaler.update()
            return loss.detach() / scaler.get_scale() if scaler.is_enabled() else loss.detach()

        mem = step_memory_bytes(forward, device)  # forward + backward only: the weights stay initial
        return step, {"mem_mb": mem / 2**20}

    precision = f"autocast {str(amp).removeprefix('torch.')}" if amp else "float32"
    case = f"{head} {arch} {size[0]}x{size[1]} b{batch} {precision} {settings.label.split()[-1]}"
    names = backends or default_backends(device)
    return _compare("train", case, names, run, settings, progress, lambda s: {"img_per_s": batch / s})
