"""The deploy wing's request and registries: one validated DeployRequest; runtimes and formats
registered in one module each, then offered by optimize, auto, `dlagraph bench --backend` and
`dlagraph export --format` with no other change."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import dlagraph
from dlagraph import DlagraphError, Format, RegistryError, Runtime
from dlagraph.cli import main
from dlagraph.deploy.prepare import prepare
from dlagraph.deploy.request import DeployError, DeployRequest, OptimizeReport

TINY = "dla_tiny_digits"


class Eager(nn.Module):
    """The toy runtime's module: the folded model, run eagerly."""

    def __init__(self, net: nn.Module, report: OptimizeReport) -> None:
        super().__init__()
        self.net, self.report = net, report

    def forward(self, x: torch.Tensor) -> Any:
        with torch.no_grad():
            return self.net(x)


def eager_build(model: nn.Module, request: DeployRequest) -> nn.Module:
    report = request.report()
    with report.step("fold BN"):
        net = prepare(model)
    return Eager(net, report)


def state_make(
    net: nn.Module, x: torch.Tensor, request: DeployRequest, dynamic: bool, tmp: Path
) -> Any:
    """The toy format: the folded weights in torch's safe format, run by loading them back."""
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    data = buf.getvalue()

    def run(xb: torch.Tensor) -> Any:
        import copy

        loaded = copy.deepcopy(net)
        loaded.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
        with torch.no_grad():
            return loaded(xb)

    return {".ptw": data}, run


@pytest.fixture
def toy_runtime() -> Any:
    rt = dlagraph.register_runtime(Runtime("eager", "PyTorch eager", ("fp32",), eager_build))
    yield rt
    dlagraph.unregister_runtime("eager")


@pytest.fixture
def toy_format() -> Any:
    fmt = dlagraph.register_format(
        Format("ptw", "torch.load", (".ptw",), ("fp32",), state_make, help="folded weights")
    )
    yield fmt
    dlagraph.unregister_format("ptw")


def test_a_registered_runtime_is_a_backend_of_optimize(toy_runtime: Runtime) -> None:
    assert dlagraph.registered_runtimes()[:3] == ["torch", "openvino", "onnxruntime"]
    assert dlagraph.registered_runtimes()[-1] == "eager"
    model = dlagraph.build_module(TINY).eval()
    x = torch.randn(2, 1, 32, 32)
    fast = dlagraph.optimize(model, backend="eager")
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
    assert "fold BN" in fast.report.steps
    with pytest.raises(DlagraphError, match=r"backend='eager' int8: not supported"):
        dlagraph.optimize(model, "int8", [x], backend="eager")


def test_auto_times_a_registered_runtime(
    toy_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the other runtimes out of the way (unavailable), so only torch and the toy are built
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    x = torch.randn(2, 1, 32, 32)
    fast = dlagraph.optimize(
        TINY, backend="auto", example_input=x, cache=tmp_path / "a.json", compile=False
    )
    assert set(fast.auto.rows) == {"torch fp32", "eager fp32"}
    assert all(v is not None for v in fast.auto.rows.values())


def test_bench_and_export_offer_what_is_registered(
    toy_runtime: Runtime,
    toy_format: Format,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "ptw: folded weights" in capsys.readouterr().out
    code = main(["export", TINY, "--format", "ptw", "--size", "32", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "ptw fp32 in torch.load" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{TINY}.ptw", f"{TINY}.ptw.json"]
    loaded = torch.load(tmp_path / f"{TINY}.ptw", weights_only=True)
    assert "base_layer.0.weight" in loaded
    args = ["bench", TINY, "--size", "32", "--batch", "2", "--runs", "1", "--backend", "eager"]
    assert main([*args, "--precision", "fp32"]) == 0
    assert "| PyTorch eager (dlagraph.optimize), fp32 |" in capsys.readouterr().out


def test_a_format_that_makes_other_files_writes_nothing(tmp_path: Path) -> None:
    def wrong(*args: Any) -> Any:
        return {".bin": b"x"}, lambda xb: xb

    dlagraph.register_format(Format("wrong", "nothing", (".ptw",), ("fp32",), wrong))
    try:
        with pytest.raises(DlagraphError, match=r"made \['\.bin'\], not its extensions"):
            dlagraph.export(TINY, "wrong", tmp_path / "o", size=(32, 32))
    finally:
        dlagraph.unregister_format("wrong")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dlagraph.register_runtime(Runtime("auto", "x", ("fp32",), eager_build)),
         "runtime 'auto' is the choice among the runtimes"),
        (lambda: dlagraph.register_runtime(Runtime("torch", "x", ("fp32",), eager_build)),
         "runtime 'torch' is built in and cannot be replaced"),
        (lambda: dlagraph.register_runtime(Runtime("Bad-Name", "x", ("fp32",), eager_build)),
         "runtime name 'Bad-Name' must match"),
        (lambda: dlagraph.register_runtime(Runtime("fast", "x", ("fp16",), eager_build)),
         "precisions must be a tuple of some of fp32, bf16, int8"),
        (lambda: dlagraph.register_runtime(Runtime("fast", "x", (), eager_build)),
         "precisions must be a tuple of some of"),
        (lambda: dlagraph.register_runtime(Runtime("fast", "x", "fp32", eager_build)),
         r"precisions must be a tuple of some of fp32, bf16, int8 \(got 'fp32'\)"),
        (lambda: dlagraph.register_runtime(Runtime("fast", "x", ("fp32",), "my_module")),
         "build must be a function or a 'module:function' reference"),
        (lambda: dlagraph.register_runtime("torch"), "give a Runtime"),
        (lambda: dlagraph.register_format(Format("onnx", "x", (".x",), ("fp32",), state_make)),
         "format 'onnx' is built in and cannot be replaced"),
        (lambda: dlagraph.register_format(Format("x", "x", ("x",), ("fp32",), state_make)),
         "extensions must look like '.onnx'"),
        (lambda: dlagraph.register_format(Format("x", "x", (), ("fp32",), state_make)),
         "extensions must look like"),
        (lambda: dlagraph.register_format(Format("x", "x", ("./../x",), ("fp32",), state_make)),
         "extensions must look like"),
        (lambda: dlagraph.unregister_runtime("openvino"), "built in and cannot be removed"),
        (lambda: dlagraph.unregister_format("pt2"), "built in and cannot be removed"),
    ],
)  # fmt: skip
def test_registries_refuse_what_would_break_them(call: Any, match: str) -> None:
    with pytest.raises(RegistryError, match=match):
        call()


def test_a_user_entry_is_replaced_only_when_asked(toy_runtime: Runtime) -> None:
    again = Runtime("eager", "again", ("fp32",), eager_build)
    with pytest.raises(RegistryError, match="already registered"):
        dlagraph.register_runtime(again)
    assert dlagraph.register_runtime(again, replace=True).title == "again"
    dlagraph.unregister_runtime("not-there")  # absent: nothing to do


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threads": 10**9}, "threads: give 1 to"),
        ({"threads": 0}, "threads: give 1 to"),
        ({"threads": -1}, "threads: give 1 to"),
        ({"threads": "2"}, "threads: give 1 to"),
        ({"threads": True}, "threads: give 1 to"),
        ({"threads": 2.0}, "threads: give 1 to"),
        ({"rewrites": "yes"}, "rewrites: give True or False"),
        ({"compile": 1}, "compile: give True or False"),
        ({"precision": "fp16"}, "precision: must be one of fp32, bf16, int8"),
        ({"precision": "int8"}, "int8 needs calibration batches"),
        ({"calibration": [torch.zeros(1, 1, 32, 32)]}, "only int8 is calibrated"),
        ({"precision": "int8", "calibration": []}, "holds no batches"),
        ({"precision": "int8", "calibration": 5}, "give an iterable of NCHW batches"),
        ({"precision": "int8", "calibration": torch.zeros(1, 1, 32, 32)}, "not one tensor"),
        ({"example": [1, 2]}, "example_input: must be a tensor"),
    ],
)  # fmt: skip
def test_a_request_is_validated_once_with_one_error_type(kwargs: dict, match: str) -> None:
    with pytest.raises(DeployError, match=match):
        DeployRequest.of(**kwargs)


def test_optimize_refuses_a_bad_request_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("built")

    monkeypatch.setattr("dlagraph.deploy.optimize.resolve", never)
    for kwargs in ({"threads": 10**9}, {"rewrites": "yes"}, {"backend": "tensorrt"}):
        with pytest.raises(DeployError):
            dlagraph.optimize(TINY, **kwargs)
    most = os.cpu_count() or 1
    assert DeployRequest.of(threads=most).threads == most


def test_the_registries_and_the_cli_choices_need_no_torch() -> None:
    import subprocess

    code = (
        "import sys, contextlib, io\n"
        "import dlagraph\n"
        "from dlagraph.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['export', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(dlagraph.registered_runtimes(), dlagraph.registered_formats())\n"
        "print('onnx' in out.getvalue(), 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines() == [
        "['torch', 'openvino', 'onnxruntime'] ['onnx', 'openvino', 'pt2', 'torchscript']",
        "True False",
    ]


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
def test_the_command_line_imports_the_users_plugins(tmp_path: Path) -> None:
    """A format registered in a module named by DLAGRAPH_PLUGINS is a choice of `dlagraph
    export --format` in a new process; a plugin that does not import is one line."""
    import subprocess

    (tmp_path / "my_deploy.py").write_text(
        "import io, torch, dlagraph\n"
        "def make(net, x, request, dynamic, tmp):\n"
        "    buf = io.BytesIO(); torch.save(net.state_dict(), buf)\n"
        "    return {'.ptw': buf.getvalue()}, lambda xb: net(xb).numpy()  # numpy answers too\n"
        "dlagraph.register_format(dlagraph.Format('ptw', 'torch.load', ('.ptw',), ('fp32',), make))\n"
    )
    (tmp_path / "broken.py").write_text("raise ImportError('missing thing')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [sys.executable, "-m", "dlagraph", "export", TINY, "--format", "ptw", "--size", "32"]
    r = subprocess.run(
        [*args, "-o", str(tmp_path / "o")],
        capture_output=True, text=True, env={**env, "DLAGRAPH_PLUGINS": "my_deploy"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "ptw fp32 in torch.load" in r.stdout and (tmp_path / "o" / f"{TINY}.ptw").is_file()
    r = subprocess.run(
        [*args, "-o", str(tmp_path / "p")],
        capture_output=True, text=True, env={**env, "DLAGRAPH_PLUGINS": "my_deploy, broken"},
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: DLAGRAPH_PLUGINS: cannot import 'broken' (ImportError: missing thing) "
        "(DLAGRAPH_NO_PLUGINS=1 runs without plugins)"
    ]
    assert not (tmp_path / "p").exists()


def test_a_runtime_that_crashes_is_a_reason_in_auto_not_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(model: nn.Module, request: DeployRequest) -> nn.Module:
        raise RuntimeError("my runtime crashed")

    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    dlagraph.register_runtime(Runtime("crashing", "Crashing", ("fp32",), crash))
    try:
        fast = dlagraph.optimize(
            TINY, backend="auto", example_input=torch.randn(2, 1, 32, 32),
            cache=tmp_path / "a.json", compile=False,
        )  # fmt: skip
    finally:
        dlagraph.unregister_runtime("crashing")
    assert fast.auto.chosen == "torch fp32"
    assert fast.auto.why["crashing fp32"] == "RuntimeError: my runtime crashed"


def test_bench_says_which_rows_it_cannot_run(capsys: pytest.CaptureFixture) -> None:
    args = ["bench", TINY, "--size", "32", "--batch", "2", "--runs", "1", "--no-timm-best"]
    assert main([*args, "--backend", "onnxruntime", "--precision", "bf16"]) == 0
    err = capsys.readouterr().err
    assert "note: onnxruntime bf16: not run (ONNX Runtime's CPU provider has no bf16" in err


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dlagraph.optimize(TINY, "int8", ["a"]), r"calibration\[0\]: must be a tensor"),
        (lambda: dlagraph.optimize(TINY, "int8", [torch.randn(2, 1, 32, 32)], backend="onnxruntime",
                                   example_input=torch.randn(2, 1, 64, 64)), "one size"),
        (lambda: dlagraph.optimize(TINY, backend="auto", example_input=torch.randn(1, 1, 32, 32),
                                   cache=5), "cache: give a file path"),
        (lambda: dlagraph.unregister_runtime([1]), "unregister: give a runtime's name"),
        (lambda: dlagraph.register_format(Format("dup", "x", (".a", ".a"), ("fp32",), state_make)),
         "each once"),
    ],
)  # fmt: skip
def test_bad_deploy_calls_are_one_line(call: Any, match: str) -> None:
    with pytest.raises(DlagraphError, match=match) as e:
        call()
    assert len(str(e.value).splitlines()) == 1


def test_a_runtime_whose_package_parent_is_missing_is_only_unavailable() -> None:
    rt = Runtime("ghost", "Ghost", ("fp32",), eager_build, packages=("nonexist_zz.sub",))
    assert not rt.available()
    with pytest.raises(DlagraphError, match="needs nonexist_zz.sub"):
        rt.require("fp32")


def test_a_plugin_that_exits_is_one_line(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "p_exit.py").write_text("import sys\nprint('chatter')\nsys.exit(0)\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run(
        [sys.executable, "-m", "dlagraph", "schema"], capture_output=True, text=True,
        env={**env, "DLAGRAPH_PLUGINS": "p_exit"},
    )  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""  # the plugin's print went to stderr
    assert "error: DLAGRAPH_PLUGINS: cannot import 'p_exit' (SystemExit: 0)" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "dlagraph", "schema"], capture_output=True, text=True,
        env={**env, "DLAGRAPH_PLUGINS": "p_exit", "DLAGRAPH_NO_PLUGINS": "1"},
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("{")


def test_an_optimized_module_refuses_what_the_network_cannot_take() -> None:
    fast = dlagraph.optimize(TINY, compile=False)
    for x, want in ((torch.randn(1, 3, 32, 32), "takes N x 1 x H x W"),
                    (torch.randn(1, 1, 30, 30), "multiples of its total stride 16"),
                    (torch.randn(1, 32, 32), "give an N x C x H x W batch")):  # fmt: skip
        with pytest.raises(DlagraphError, match=re.escape(want)):
            fast(x)


@pytest.mark.parametrize("command", [["bench", TINY], ["fit", TINY, "--measure"]])
def test_threads_beyond_the_machines_cpus_are_refused(
    command: list[str], capsys: pytest.CaptureFixture
) -> None:
    most = os.cpu_count() or 1
    with pytest.raises(SystemExit) as e:
        main([*command, "--threads", str(most + 1)])
    assert e.value.code == 2
    assert f"must be 1 to {most}, this machine's CPUs (got {most + 1})" in capsys.readouterr().err


def test_export_set_changes_a_specs_field(tmp_path: Path) -> None:
    args = ["export", TINY, "--format", "onnx", "--size", "32", "-o", str(tmp_path)]
    assert main([*args, "--set", "aggregation.residual=true"]) == 0
    meta = __import__("json").loads((tmp_path / f"{TINY}.onnx.json").read_text())
    assert meta["spec"]["aggregation"]["residual"] is True
    assert main([*args, "--set", "levels.99.depth=2", "--force"]) == 2
