"""Peer inference engines, timed beside :func:`hrnet_fast.optimize` on the same weights and inputs.

    compile-freeze      torch.compile (inductor) with freezing: BN folded into constant weights, on
                        a CPU weights prepacked for oneDNN with fused conv epilogues
    compile-ro-freeze   the same with mode="reduce-overhead" (CUDA graphs; CUDA only)
    compile-ma-freeze   the same with mode="max-autotune" (autotuned kernels and CUDA graphs; CUDA only)
    onnxruntime         ONNX Runtime, all graph optimizations, CPU execution provider (CUDA's on a GPU)
    openvino            OpenVINO's CPU plugin, inference precision hint = the row's dtype

Each ``prepare_*(model, x)`` builds its engine from the eval-mode reference ``model`` (the caller's
copy: it may be changed) for inputs like ``x`` and returns a call that runs one forward on ``x``.
The ONNX peers run a graph exported from the reference ops. A peer that is not installed, or that
cannot run the input's device or dtype, raises :class:`PeerUnavailable` with the reason; the
benchmark turns that into a row, never an error. Optional peers install with
``pip install "hrnet-fast[peers]"``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..extras import install_hint

COMPILE_FREEZE = "compile-freeze"
COMPILE_RO_FREEZE = "compile-ro-freeze"
COMPILE_MA_FREEZE = "compile-ma-freeze"
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"


class PeerUnavailable(RuntimeError):
    """This peer cannot run here; the message says why (not installed, device, dtype)."""


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PeerUnavailable(f"not installed ({install_hint('peers')})")


def _outputs(values: list) -> Tensor | tuple[Tensor, ...]:
    outs = tuple(torch.from_numpy(v) if not isinstance(v, Tensor) else v for v in values)
    return outs[0] if len(outs) == 1 else outs


def prepare_compile(model: torch.nn.Module, x: Tensor, mode: str | None = None) -> Callable[[], object]:
    """``torch.compile`` of the reference model with inductor freezing, compiled by a first call."""
    if mode is not None and x.device.type != "cuda":
        raise PeerUnavailable(f"mode={mode!r} is for CUDA graphs; the CPU peer is compile-freeze")
    model.backend = "reference"
    compiled = torch.compile(model, dynamic=False, mode=mode)
    with torch._inductor.config.patch(freezing=True), torch.inference_mode():
        compiled(x)
    return lambda: compiled(x)


def export_onnx(model: torch.nn.Module, x: Tensor, path: str) -> None:
    """The reference ops of ``model`` as an ONNX graph for inputs shaped like ``x`` (opset 17)."""
    model.backend = "reference"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["images"], opset_version=17)


@contextlib.contextmanager
def _onnx_file(model: torch.nn.Module, x: Tensor):
    with tempfile.TemporaryDirectory(prefix="hrnet_fast_peer_") as folder:
        path = os.path.join(folder, "model.onnx")
        export_onnx(model, x, path)
        yield path


def prepare_onnxruntime(model: torch.nn.Module, x: Tensor) -> Callable[[], object]:
    """ONNX Runtime with every graph optimization on the input's device: the CPU execution provider
    (float32 only: it has no bfloat16 convolutions), or CUDA's (inputs and outputs bound on the GPU)."""
    _require("onnxruntime")
    import onnxruntime as ort

    cuda = x.device.type == "cuda"
    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise PeerUnavailable("not installed: onnxruntime-gpu provides the CUDA execution provider")
    if not cuda and x.dtype != torch.float32:
        raise PeerUnavailable(f"no {str(x.dtype).removeprefix('torch.')} convolutions in the CPU execution provider")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    with _onnx_file(model, x) as path:
        if cuda:
            stream = torch.cuda.current_stream(x.device).cuda_stream
            cuda_options = {
                "device_id": x.device.index or 0,
                "cudnn_conv_algo_search": "EXHAUSTIVE",
                "user_compute_stream": str(stream),
            }
            session = ort.InferenceSession(path, options, providers=[(provider, cuda_options)])
        else:
            session = ort.InferenceSession(path, options, providers=[provider])
    if not cuda:
        feed = {"images": x.contiguous().numpy()}
        return lambda: _outputs(session.run(None, feed))
    return _bound_cuda_run(session, model, x)


def _bound_cuda_run(session, model: torch.nn.Module, x: Tensor) -> Callable[[], object]:
    """A CUDA session run whose input and outputs stay in torch's GPU tensors (no host copies)."""
    import numpy as np

    with torch.no_grad():
        ref = model(x)
    refs = ref if isinstance(ref, tuple) else (ref,)
    outs = [torch.empty(r.shape, dtype=r.dtype, device=r.device) for r in refs]
    xc = x.contiguous()
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16}[x.dtype]
    binding = session.io_binding()
    index = x.device.index or 0
    binding.bind_input("images", "cuda", index, np_dtype, list(xc.shape), xc.data_ptr())
    for meta, out in zip(session.get_outputs(), outs, strict=True):
        binding.bind_output(meta.name, "cuda", index, np_dtype, list(out.shape), out.data_ptr())

    def run():
        session.run_with_iobinding(binding)
        return outs[0] if len(outs) == 1 else tuple(outs)

    return run


def prepare_openvino(model: torch.nn.Module, x: Tensor) -> Callable[[], object]:
    """OpenVINO's CPU plugin, latency mode, with the row's dtype as its inference precision (its
    bfloat16 runs take float32 inputs and give float32 outputs)."""
    _require("openvino")
    if x.device.type != "cpu":
        raise PeerUnavailable("OpenVINO's plugin here is the CPU one")
    precision = {torch.float32: "f32", torch.bfloat16: "bf16"}.get(x.dtype)
    if precision is None:
        raise PeerUnavailable(f"no {x.dtype} inference precision on a CPU")
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    with _onnx_file(model.float(), x.float()) as path:
        compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    feed = {0: x.float().contiguous().numpy()}

    def run():
        results = request.infer(feed)
        return _outputs([results[out].copy() for out in compiled.outputs])

    return run


# name -> prepare(model, x); each raises PeerUnavailable where it cannot run.
PEERS: dict[str, Callable[[torch.nn.Module, Tensor], Callable[[], object]]] = {
    COMPILE_FREEZE: prepare_compile,
    COMPILE_RO_FREEZE: lambda m, x: prepare_compile(m, x, mode="reduce-overhead"),
    COMPILE_MA_FREEZE: lambda m, x: prepare_compile(m, x, mode="max-autotune"),
    ONNXRUNTIME: prepare_onnxruntime,
    OPENVINO: prepare_openvino,
}


def device_peers(device: torch.device) -> list[str]:
    """The peers that belong in a comparison on ``device`` (installed or not: a missing one is a row)."""
    if device.type == "cuda":
        return [COMPILE_RO_FREEZE, COMPILE_MA_FREEZE, ONNXRUNTIME]
    return [COMPILE_FREEZE, ONNXRUNTIME, OPENVINO]
