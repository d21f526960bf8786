"""Backend selection: per call, per model, set_backend, the environment, auto; clear errors."""

from __future__ import annotations

import pytest
import torch

import hrnet_fast
from hrnet_fast import BackendUnavailableError, HRNet
from hrnet_fast.nn import MultiResolutionFusion
from hrnet_fast.ops import known_backends, registry, resolve_backend, upsample_sum

UNAVAILABLE = [name for name, why in hrnet_fast.backend_status().items() if why is not None]


def test_reference_is_always_available_and_every_other_backend_says_why_not():
    status = hrnet_fast.backend_status()
    assert set(status) == set(known_backends()) == {"reference", "triton", "cpp"}
    assert status["reference"] is None
    assert "reference" in hrnet_fast.available_backends("cpu")
    for name in UNAVAILABLE:
        assert isinstance(status[name], str) and status[name]


def test_selection_precedence_call_then_set_backend_then_environment(monkeypatch):
    cpu = torch.device("cpu")
    assert hrnet_fast.get_backend() == "auto"
    assert resolve_backend(None, cpu) in hrnet_fast.available_backends("cpu")
    monkeypatch.setenv(registry.ENV_VAR, "reference")
    assert hrnet_fast.get_backend() == "reference"
    hrnet_fast.set_backend("auto")
    assert hrnet_fast.get_backend() == "auto"
    hrnet_fast.set_backend("reference")
    assert resolve_backend(None, cpu) == "reference"
    hrnet_fast.set_backend(None)
    assert hrnet_fast.get_backend() == "reference"  # the environment again


def test_unknown_backend_names_are_rejected_everywhere(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'fast'.*reference"):
        hrnet_fast.set_backend("fast")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        HRNet("w18_small_v1", backend="fast")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        upsample_sum(torch.randn(1, 2, 4, 4), backend="fast")
    monkeypatch.setenv(registry.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"from \$HRNET_FAST_BACKEND"):
        hrnet_fast.get_backend()


@pytest.mark.skipif(not UNAVAILABLE, reason="every backend is available here")
@pytest.mark.parametrize("name", UNAVAILABLE)
def test_unavailable_backend_raises_with_the_reason(name):
    reason = hrnet_fast.backend_status()[name]
    with pytest.raises(BackendUnavailableError, match=f"backend '{name}' is not available: .*{reason[:20]}"):
        hrnet_fast.set_backend(name)
    with pytest.raises(BackendUnavailableError):
        HRNet("w18_small_v1", backend=name)
    with pytest.raises(BackendUnavailableError):
        upsample_sum(torch.randn(1, 2, 4, 4), backend=name)


def test_model_backend_reaches_every_fusion_module():
    model = HRNet("w18_small_v1", head="seg", backend="reference")
    fusions = [m for m in model.modules() if isinstance(m, MultiResolutionFusion)]
    assert fusions and {f.backend for f in fusions} == {"reference"}
    model.backend = None
    assert {f.backend for f in fusions} == {None}
    with pytest.raises(ValueError, match="unknown backend"):
        model.backend = "nope"


def test_a_backend_is_probed_before_its_kernel_table_is_read(monkeypatch):
    """``unsupported_reason`` on a backend nothing has probed yet (``auto`` falls back to the
    reference without probing it) probes it instead of failing on its missing table."""
    from hrnet_fast.ops import registry

    monkeypatch.setattr(registry, "_KERNELS", {})
    registry.clear_probes()
    try:
        like = torch.zeros(1, 2, 3, 3)
        assert registry.unsupported_reason("fusion_branch", "reference", like) == (
            "backend 'reference' has no fusion_branch kernel"
        )
        assert registry.kernel("upsample_sum", "reference", like) is registry.op_specs()["upsample_sum"].reference
    finally:
        registry.clear_probes()


@pytest.mark.skipif("cpp" not in hrnet_fast.available_backends("cpu"), reason="needs the cpp backend")
def test_fused_kernel_is_the_backends_kernel_or_none():
    from hrnet_fast.ops import registry

    fp32, bf16 = torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3, dtype=torch.bfloat16)
    fused = registry.fused_kernel("winograd_conv", "cpp", fp32)
    assert fused is not None and fused is registry.kernel("winograd_conv", "cpp", fp32)
    assert fused is not registry.op_specs()["winograd_conv"].reference
    assert registry.fused_kernel("winograd_conv", "reference", fp32) is None
    assert registry.fused_kernel("winograd_conv", "cpp", torch.zeros(1, 2, 3, 3, dtype=torch.int32)) is None
    assert registry.fused_kernel("fusion_branch", "cpp", bf16) is registry.kernel("fusion_branch", "cpp", bf16)


@pytest.mark.skipif("cpp" not in hrnet_fast.available_backends("cpu"), reason="needs the cpp backend")
def test_a_change_of_the_environment_applies_to_the_next_call(monkeypatch):
    from hrnet_fast.nn import folded_fusion

    calls = []
    real = folded_fusion.fusion_branch
    monkeypatch.setattr(folded_fusion, "fusion_branch", lambda *a, **k: calls.append(k["backend"]) or real(*a, **k))
    fuse = MultiResolutionFusion((4, 8)).eval()
    xs = [torch.randn(1, 4, 6, 6), torch.randn(1, 8, 3, 3)]
    cpu = torch.device("cpu")
    with torch.no_grad():
        for value, want, level2 in [
            ("reference", "reference", []),
            (" CPP ", "cpp", ["cpp"] * 2),
            ("reference", "reference", []),
            ("", resolve_backend(None, cpu), None),
            ("cpp", "cpp", ["cpp"] * 2),
        ]:
            monkeypatch.setenv(registry.ENV_VAR, value)
            calls.clear()
            assert resolve_backend(None, cpu) == want
            fuse(xs)
            assert level2 is None or calls == level2, value
        for _ in range(2):  # an unknown name is refused on every call, not only the first
            monkeypatch.setenv(registry.ENV_VAR, "fast")
            with pytest.raises(ValueError, match=r"unknown backend 'fast' from \$HRNET_FAST_BACKEND"):
                fuse(xs)
        monkeypatch.delenv(registry.ENV_VAR)
        assert hrnet_fast.get_backend() == "auto"


def _onnx_flags():
    """(object, attribute) of each flag torch.onnx.is_in_onnx_export() reads in this torch."""
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:
        return []
    return [(GLOBALS, "in_onnx_export"), (_flags, "_is_onnx_exporting")]


@pytest.mark.parametrize("flag", range(2), ids=["torchscript-exporter", "dynamo-exporter"])
def test_either_onnx_export_flag_forces_the_reference_ops(monkeypatch, flag):
    flags = _onnx_flags()
    if not flags:
        pytest.skip("this torch keeps its ONNX export flags elsewhere")
    cpu = torch.device("cpu")
    assert not registry.exporting() and not torch.onnx.is_in_onnx_export()
    wanted = resolve_backend("cpp" if "cpp" in hrnet_fast.available_backends("cpu") else None, cpu)
    with monkeypatch.context() as patch:
        patch.setattr(*flags[flag], True)
        assert torch.onnx.is_in_onnx_export()
        assert registry.exporting()
        assert resolve_backend(wanted, cpu) == resolve_backend(None, cpu) == "reference"
    assert not registry.exporting()
    assert resolve_backend(wanted, cpu) == wanted
