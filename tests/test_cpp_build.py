"""Building and loading the C++ extension: its kernels against the Python schemas, laziness, cache,
failures, coexistence with the Python fragments of the namespace, and what the backend registry
reports."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
from test_cpp_cuda_compile import _run_all

import hrnet_fast
from hrnet_fast import BackendUnavailableError, _ext
from hrnet_fast.ops import registry, resolve_backend, upsample_sum


def _run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (with this process's extension cache); return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_every_cpp_kernel_serves_an_op_defined_once_in_python():
    assert hrnet_fast.backend_status()["cpp"] is None
    specs = registry.op_specs()
    for op in ("upsample_sum", "upsample_sum_backward", "upsample_concat", "upsample_concat_backward"):
        schema = getattr(torch.ops.hrnet_fast, f"{op}_cpp").default._schema
        assert str(schema) == f"hrnet_fast::{op}_cpp{specs[op].schema}"
    assert not [i for i in torch._C._dispatch_find_dangling_impls() if "name: hrnet_fast::" in i]


def test_the_cpu_sources_parse_as_cpp17():
    """The GPU machine's just-in-time builds pass -std=c++17 (torch 2.11); this torch passes c++20."""
    from torch.utils import cpp_extension

    includes = [f"-I{_ext.SOURCE_DIR}", *(f"-isystem{p}" for p in cpp_extension.include_paths())]
    includes.append(f"-isystem{sysconfig.get_paths()['include']}")
    sources = _ext.sources(with_cuda=False)
    if _ext.onednn_files() is not None:
        includes.append(f"-isystem{_ext.onednn_files()[0]}")
        sources.append(_ext.SOURCE_DIR / "onednn" / "onednn_conv.cpp")
    assert len(sources) >= 7
    _run_all([["c++", "-std=c++17", "-fsyntax-only", "-fopenmp", *includes, str(source)] for source in sources])


def test_auto_picks_the_cpp_backend_on_cpu_tensors():
    assert resolve_backend(None, torch.device("cpu")) == "cpp"
    assert "cpp" in hrnet_fast.available_backends("cpu")


def test_a_kernel_for_an_op_no_module_defines_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(_ext.CACHE_ENV, str(tmp_path / "cache"))
    source = tmp_path / "stray.cpp"
    source.write_text(
        "#include <ATen/core/Tensor.h>\n#include <torch/library.h>\n"
        "at::Tensor twice(const at::Tensor& x) { return x.mul(2); }\n"
        'TORCH_LIBRARY_IMPL(hrnet_fast_stray_test, CPU, m) { m.impl("no_such_op_cpp", &twice); }\n'
    )
    _ext.build_and_load("hrnet_fast_stray_test", [source], with_cuda=False)
    with pytest.raises(RuntimeError, match="no op module defines: hrnet_fast_stray_test::no_such_op_cpp"):
        registry.OpLibrary("hrnet_fast_stray_test", "cpp").define_compiled(("cpu",))


def test_importing_hrnet_fast_neither_builds_nor_loads_the_extension():
    out = _run_python(
        """
        import sys, torch, hrnet_fast
        from hrnet_fast import HRNet
        HRNet("w18_small_v1")
        print(sorted(torch.ops.loaded_libraries), "hrnet_fast._ext" in sys.modules)
        """
    )
    assert out.strip() == "[] False"


def test_loaded_library_says_whether_the_library_is_loaded_and_never_loads_it():
    out = _run_python(
        """
        import torch
        from hrnet_fast import _ext
        print(_ext.loaded_library() is None, len(torch.ops.loaded_libraries))
        _ext.load()
        print(_ext.loaded_library() == _ext.load(), len(torch.ops.loaded_libraries))
        """
    )
    assert out.split() == ["True", "0", "True", "1"]


def test_the_library_loads_next_to_python_fragments_of_its_namespace():
    """Other fragments of the namespace (the Triton backend's ops) may come before or after it."""
    out = _run_python(
        """
        import torch
        fragment = torch.library.Library("hrnet_fast", "FRAGMENT")
        fragment.define("upsample_sum_triton(Tensor x) -> Tensor")
        fragment.impl("upsample_sum_triton", lambda x: x * 2, "CompositeExplicitAutograd")

        @torch.library.custom_op("hrnet_fast::upsample_concat_triton", mutates_args=())
        def concat(x: torch.Tensor) -> torch.Tensor:
            return x * 3

        import hrnet_fast
        assert hrnet_fast.backend_status()["cpp"] is None  # loads the library, defines its ops
        after = torch.library.Library("hrnet_fast", "FRAGMENT")
        after.define("later_op(Tensor x) -> Tensor")
        after.impl("later_op", lambda x: x * 4, "CompositeExplicitAutograd")

        x = torch.ones(1, 2, 4, 4)
        ops = torch.ops.hrnet_fast
        fused = ops.upsample_sum_cpp(x, [x], [torch.ones(1, 2, 2, 2)], "nearest", False, True)
        print(ops.upsample_sum_triton(x).mean().item(), ops.upsample_concat_triton(x).mean().item(),
              ops.later_op(x).mean().item(), fused.mean().item())
        """
    )
    assert out.split() == ["2.0", "3.0", "4.0", "3.0"]


def test_a_failed_build_reports_the_compiler_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(_ext.CACHE_ENV, str(tmp_path / "cache"))
    broken = tmp_path / "broken.cpp"
    broken.write_text("int f() { return undeclared_name_42; }\n")
    with pytest.raises(_ext.ExtensionBuildError, match="undeclared_name_42") as info:
        _ext.build_and_load("hrnet_fast_broken", [broken], with_cuda=False)
    assert "full log: " in str(info.value)
    assert "hrnet_fast: compiling hrnet_fast_broken (CPU kernels) into" in capsys.readouterr().err
    log = str(info.value).rsplit("full log: ", 1)[1].rstrip(")")
    assert "undeclared_name_42" in Path(log).read_text()


@pytest.fixture
def failing_extension(monkeypatch):
    """The extension as it looks when its build failed (the registry probes it afresh)."""

    def load():
        raise _ext.ExtensionBuildError("building it failed: ops.cpp:1:1: error: boom (full log: /x)")

    monkeypatch.setattr(_ext, "load", load)
    registry.clear_probes()
    yield
    registry.clear_probes()


def test_when_the_build_fails_the_backend_says_why_and_the_rest_keeps_working(failing_extension):
    reason = hrnet_fast.backend_status()["cpp"]
    assert reason.startswith("the C++ extension is unavailable: building it failed: ops.cpp:1:1: error: boom")
    with pytest.raises(BackendUnavailableError, match="backend 'cpp' is not available: .*error: boom"):
        hrnet_fast.set_backend("cpp")
    x = torch.randn(1, 2, 4, 4)
    assert resolve_backend(None, x.device) == "reference"
    torch.testing.assert_close(upsample_sum(x, [x]), (2 * x).relu())


def test_an_ahead_of_time_build_is_used_unless_a_source_is_newer(tmp_path, capsys):
    package, sources = tmp_path / "hrnet_fast", tmp_path / "csrc"
    package.mkdir()
    sources.mkdir()
    library = package / "_C.abi3.so"
    library.write_bytes(b"")
    (sources / "ops.cpp").write_text("")
    os.utime(sources / "ops.cpp", (1_000, 1_000))
    os.utime(library, (2_000, 2_000))
    suffixes = [".abi3.so"]
    assert _ext.aot_library(package, sources, suffixes) == library
    os.utime(sources / "ops.cpp", (3_000, 3_000))
    assert _ext.aot_library(package, sources, suffixes) is None
    assert "_C.abi3.so is older than csrc/; building just in time instead" in capsys.readouterr().err
