"""The hrnet-fast command's parser stays light: building it and every --help load no torch or triton."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from hrnet_fast import extras
from hrnet_fast.cli import COMMAND_MODULES, build_parser, main
from hrnet_fast.progress import progress_bar

HEAVY = ("torch", "triton")

_PROBE = """
import contextlib, io, json, sys
from hrnet_fast.cli import build_parser

parser = build_parser()
commands = list(parser._subparsers._group_actions[0].choices)
helps = {}
for argv in [["--help"], *[[c, "--help"] for c in commands]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parser.parse_args(argv)
    helps[" ".join(argv)] = out.getvalue()
print(json.dumps({"commands": commands, "helps": helps, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    """What a fresh interpreter imported after building the parser and printing every --help."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_building_the_parser_and_every_help_imports_no_torch(probe):
    assert {"bench", "pose-eval", "pose-predict"} <= set(probe["commands"])
    heavy = [m for m in probe["modules"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"--help imported {heavy[:5]}; see the rule in hrnet_fast/cli.py"
    assert all(f"hrnet_fast.{m.split('.')[1]}" in probe["modules"] for m in COMMAND_MODULES)
    for argv, text in probe["helps"].items():
        assert text.startswith("usage: hrnet-fast"), argv
    assert "--no-channels-last" in probe["helps"]["bench --help"]
    assert "<image stem>_pose.png" in probe["helps"]["pose-predict --help"]


def test_import_hrnet_fast_is_light_and_names_load_on_first_use():
    code = (
        "import sys, hrnet_fast; light = 'torch' not in sys.modules; "
        "model = hrnet_fast.HRNet('w18_small_v1', head='pose'); "
        "print(light, type(model).__name__, 'torch' in sys.modules, 'HRNet' in dir(hrnet_fast))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "HRNet", "True", "True"]
    import hrnet_fast

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        hrnet_fast.nope  # noqa: B018


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--arch", "w33"], "unknown arch 'w33'; choose one of w18_small_v1"),
        (["bench", "--head", "depth"], "unknown head 'depth'; choose one of"),
        (["bench", "--backend", "fast"], "unknown backend 'fast'; choose one of reference"),
        (["bench", "--size", "256by192"], "expected HEIGHTxWIDTH such as 256x192"),
        (["bench", "--batch", "0"], "must be at least 1"),
        (["bench", "--device", "gpu7"], "'gpu7' is not a device"),
        (["pose-predict", "a.jpg", "--checkpoint", "c.pth", "--backend", "fast"], "unknown backend 'fast'"),
    ],
)
def test_choices_that_need_torch_are_checked_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_missing_extra_names_the_install_line_for_a_checkout_and_for_a_package(monkeypatch):
    with pytest.raises(extras.MissingExtraError, match=r'--plot needs no_such_module.*pip install -e "\.\[plot\]"'):
        extras.require("no_such_module", "plot", "--plot")
    extras.require("json", "plot", "--plot")  # present: no error
    monkeypatch.setattr(extras, "source_checkout", lambda: None)
    assert extras.install_hint("plot") == 'pip install "hrnet-fast[plot]"'
    assert extras.install_hint("triton") == 'pip install "hrnet-fast[triton]"'


def test_source_checkout_is_the_folder_with_pyproject(tmp_path, monkeypatch):
    assert (extras.source_checkout() / "pyproject.toml").is_file()  # these tests run from a checkout
    installed = tmp_path / "site-packages" / "hrnet_fast"
    installed.mkdir(parents=True)
    monkeypatch.setattr(extras, "PACKAGE_ROOT", installed)
    assert extras.source_checkout() is None


def test_every_subcommand_has_a_command_function():
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert all(callable(parser.get_default("func")) for parser in subcommands.values())


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_draw_on_a_terminal_only(monkeypatch, capsys):
    with progress_bar(2, "row") as bar:  # pytest's captured stderr is not a terminal
        bar.update(2)
        bar.write("table")
    assert capsys.readouterr() == ("table\n", "")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(2, "row") as bar:
        bar.set_description_str("op: upsample_sum [cpu]")
        bar.update(2)
    assert "op: upsample_sum [cpu]" in terminal.getvalue() and "2/2" in terminal.getvalue()


def test_without_tqdm_the_commands_run_without_a_bar(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as after a --no-deps install
    with progress_bar(2, "row") as bar:
        bar.set_description_str("x")
        bar.update()
        bar.write("table")
    assert capsys.readouterr() == ("table\n", "")


def test_the_triton_backend_says_how_to_install_triton(monkeypatch):
    from hrnet_fast.ops.backends import triton as triton_backend

    monkeypatch.setitem(sys.modules, "triton", None)  # as on a CPU-only install without the extra
    reason = triton_backend._probe()
    assert "triton does not import" in reason and "[triton]" in reason and "pip install" in reason


def test_the_peer_names_in_help_are_the_peers():
    from hrnet_fast.bench import cli as bench_cli
    from hrnet_fast.bench.peers import PEERS

    assert list(bench_cli.PEER_NAMES) == list(PEERS)
