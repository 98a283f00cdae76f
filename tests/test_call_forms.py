"""Every documented call form of the public API works.

The forms are not listed by hand: they are read from each public function's signature (the
annotation of each input: ``Spec``, ``str``, ``Path``, ``dict`` / ``Mapping``, ``nx.DiGraph``,
``nn.Module``) and docstring (``a preset name``, ``a spec file``, ``a compiled graph``, ``a
generated class``, ``a checkpoint`` ...), and every form found is called. A form documented
tomorrow is called tomorrow, or this file fails saying it has no value for it. timm's names are
accepted wherever a preset name is. The runtimes, formats and precisions come from the
registries (``registered_runtimes``, ``registered_formats``, and each one's precisions), so a
new runtime or precision is called too.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dlagraph
from dlagraph.deploy.registry import FORMATS, RUNTIMES

from .helpers import bf16_warning

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
TINY = "dla_tiny_digits"  # 1x32x32 images, 10 classes: every call is fast
X = torch.zeros(1, 1, 32, 32)
X3 = torch.zeros(1, 3, 32, 32)  # for a timm name and its preset
# a timm name (the smallest of timm's DLAs, so each form's run is cheap) and the preset it names
TIMM, TIMM_PRESET = "dla46x_c", "dla48_s_s"


def _x(network: Any) -> Any:
    """An input the network takes."""
    return X3 if network in (TIMM, TIMM_PRESET) else X


# --- the forms, as signatures and docstrings name them ---------------------------------------

# what an annotation's names (or a docstring's words) say an input may be
ANNOTATION_FORMS = {
    "Spec": {"spec"},
    "str": {"preset", "timm name", "path string"},
    "Path": {"path"},
    "dict": {"mapping"},
    "Mapping": {"mapping"},
    "DiGraph": {"graph"},
    "nn.Module": {"module"},
    "Module": {"module"},
}
DOC_FORMS = {
    r"\bspec\b(?! file)": {"spec"},
    r"preset": {"preset", "timm name"},
    r"spec file|YAML file|file path": {"path", "path string"},
    r"mapping": {"mapping"},
    r"compiled (graph|DAG)": {"graph"},
    r"build_module|\ba module\b": {"module"},
    r"generated class": {"generated"},
    r"checkpoint": {"checkpoint file"},
}
TEXT_FORMS = {"preset", "timm name", "path", "path string", "checkpoint file"}
# a checkpoint's parameters: a file (str or Path) or a state dict
CHECKPOINT_ANNOTATION = {
    "str": {"checkpoint string"},
    "Path": {"checkpoint"},
    "Mapping": {"state dict"},
}

# each public function's inputs: which parameter is a network (spec-like) or a checkpoint; a
# new public function with such an input must be added here (a test below says so)
NETWORK_INPUTS = {
    "activation_memory": "spec",
    "build_module": "spec",
    "compile_spec": "spec",
    "draw": "spec",
    "export": "model",
    "fold_bn": "model",
    "generate_source": "spec",
    "html_view": "spec",
    "load_spec": "source",
    "load_weights": "model",
    "optimize": "model",
    "spec_to_yaml": "spec",
    "summarize": "spec",
}
CHECKPOINT_INPUTS = {
    "build_module": "weights",
    "export": "weights",
    "infer_checkpoint": "checkpoint",
    "infer_spec": "checkpoint",
    "load_weights": "source",
}


def _names(annotation: str) -> set[str]:
    """The names in an annotation, dotted ones also by their last part (``nx.DiGraph``)."""
    dotted = set(re.findall(r"[A-Za-z_][A-Za-z_.]*", annotation))
    return dotted | {n.rsplit(".", 1)[-1] for n in dotted}


def _doc_of(fn: Callable[..., Any], param: str) -> str:
    """What the docstring says of ``param``: its first paragraph (of the function's first
    input) and its ``Args:`` entry."""
    doc = inspect.getdoc(fn) or ""
    first = list(inspect.signature(fn).parameters)[0]
    text = doc.split("\n\n")[0] if param == first else ""
    entry = re.search(rf"^\s*{param}:(.*?)(?=^\s*\w+:|\Z)", doc, re.M | re.S)
    return text + (entry.group(1) if entry else "")


def network_forms(name: str) -> set[str]:
    fn = getattr(dlagraph, name)
    param = NETWORK_INPUTS[name]
    annotation = str(inspect.signature(fn).parameters[param].annotation)
    forms: set[str] = set()
    for word, found in ANNOTATION_FORMS.items():
        if word in _names(annotation) or (word == "nn.Module" and "nn.Module" in annotation):
            forms |= found
    doc = _doc_of(fn, param)
    names = _names(annotation)
    named = bool(names & {"str", "Path", "Any"})  # a parameter that can be a name or a path
    for pattern, found in DOC_FORMS.items():
        if re.search(pattern, doc, re.I):
            forms |= found if named else found - TEXT_FORMS
    # the docstring's examples: a string literal as the input is a preset name or a path
    first = list(inspect.signature(fn).parameters)[0] == param
    call = r">>> .*?\b" + fn.__name__ + r"\((['\"])([^'\"]+)\1"
    for _, literal in re.findall(call, inspect.getdoc(fn) or ""):
        if first and named:
            forms |= {"path string"} if literal.endswith((".yaml", ".yml")) else {"preset"}
    if "preset" in forms:  # timm's names are taken wherever a preset's are
        forms.add("timm name")
    return forms


def checkpoint_forms(name: str) -> set[str]:
    fn = getattr(dlagraph, name)
    annotation = str(inspect.signature(fn).parameters[CHECKPOINT_INPUTS[name]].annotation)
    forms: set[str] = set()
    for word, found in CHECKPOINT_ANNOTATION.items():
        if word in _names(annotation):
            forms |= found
    return forms


def _public_functions() -> list[str]:
    return sorted(n for n in dlagraph.__all__ if inspect.isfunction(getattr(dlagraph, n)))


def test_every_input_of_the_public_api_is_classified() -> None:
    """A public function that takes a network or a checkpoint is in the tables above (so its
    documented forms are called); the tables name real parameters."""
    for name in _public_functions():
        fn = getattr(dlagraph, name)
        for p in inspect.signature(fn).parameters.values():
            names = _names(str(p.annotation))
            networkish = bool(names & {"Spec", "DiGraph", "nn.Module", "Module"}) or p.name in (
                "spec",
                "model",
            )
            if networkish and p.name not in ("summary",):
                assert NETWORK_INPUTS.get(name) == p.name, (
                    f"{name}({p.name}): add it to NETWORK_INPUTS"
                )
            if p.name in ("checkpoint", "weights") or (name, p.name) == ("load_weights", "source"):
                assert CHECKPOINT_INPUTS.get(name) == p.name, (
                    f"{name}({p.name}): add it to CHECKPOINT_INPUTS"
                )
    for table in (NETWORK_INPUTS, CHECKPOINT_INPUTS):
        for name, param in table.items():
            assert param in inspect.signature(getattr(dlagraph, name)).parameters, (name, param)


def test_the_forms_read_from_the_docs_are_the_ones_users_see() -> None:
    """The reading of signatures and docstrings finds what the docs promise (a check of this
    file's reader, against forms a reader of the docs would list)."""
    assert network_forms("summarize") >= {"spec", "preset", "timm name", "path", "mapping", "graph"}
    assert network_forms("load_spec") >= {"spec", "preset", "path", "mapping"}
    assert network_forms("html_view") >= {"spec", "preset", "graph"}
    assert network_forms("optimize") >= {"module", "generated", "spec", "preset"}
    assert network_forms("export") >= {
        "module",
        "spec",
        "preset",
        "path",
        "mapping",
        "checkpoint file",
    }
    assert checkpoint_forms("load_weights") == {"checkpoint string", "checkpoint", "state dict"}


# --- the values of each form, for the digits network -----------------------------------------


def _checkpoint(tmp: Path) -> Path:
    path = tmp / "tiny.pth"
    if not path.exists():
        with torch.random.fork_rng():
            torch.manual_seed(5)
            torch.save(dlagraph.build_module(TINY).state_dict(), path)
    return path


def _generated() -> Any:
    ns: dict[str, Any] = {}
    exec(compile(dlagraph.generate_source(TINY), f"{TINY}.py", "exec"), ns)  # noqa: S102
    cls = next(v for k, v in ns.items() if isinstance(v, type) and k == "DlaTinyDigits")
    return cls().eval()


NETWORKS: dict[str, Callable[[Path], Any]] = {
    "spec": lambda tmp: dlagraph.load_spec(TINY),
    "preset": lambda tmp: TINY,
    "path": lambda tmp: ROOT / "specs" / f"{TINY}.yaml",
    "path string": lambda tmp: str(ROOT / "specs" / f"{TINY}.yaml"),
    "mapping": lambda tmp: dlagraph.load_spec(TINY).to_dict(),
    "graph": lambda tmp: dlagraph.compile_spec(TINY),
    "module": lambda tmp: dlagraph.build_module(TINY).eval(),
    "generated": lambda tmp: _generated(),
    "checkpoint file": lambda tmp: _checkpoint(tmp),
}
CHECKPOINTS: dict[str, Callable[[Path], Any]] = {
    "checkpoint": _checkpoint,
    "checkpoint string": lambda tmp: str(_checkpoint(tmp)),
    "state dict": lambda tmp: torch.load(_checkpoint(tmp), weights_only=True),
}


def _output_shape(model: Any) -> tuple[int, ...]:
    """What the model computes from the input it takes (the digits' one channel or three)."""
    with torch.no_grad():
        for x in (X, X3):
            try:
                return tuple(model(x).shape)
            except (RuntimeError, dlagraph.DlagraphError):  # the other number of channels
                continue
    raise AssertionError("the model takes neither input")


def _state(model: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


# each function called with one input, and what of its result must not depend on the form
CALLS: dict[str, tuple[Callable[[Any, Path], Any], Callable[[Any], Any]]] = {
    "activation_memory": (lambda x, t: dlagraph.activation_memory(x), repr),
    "build_module": (lambda x, t: dlagraph.build_module(x), _state),
    "compile_spec": (lambda x, t: dlagraph.compile_spec(x), lambda g: sorted(g.nodes)),
    "draw": (lambda x, t: dlagraph.draw(x), lambda d: d.source),
    "fold_bn": (lambda x, t: dlagraph.fold_bn(x), _output_shape),
    "generate_source": (
        lambda x, t: dlagraph.generate_source(x),
        lambda src: src.split('"""', 1)[1],  # past the header naming where it came from
    ),
    "html_view": (lambda x, t: dlagraph.html_view(x), len),
    "load_spec": (lambda x, t: dlagraph.load_spec(x), lambda s: s.to_dict()),
    "load_weights": (lambda x, t: dlagraph.load_weights(x, _checkpoint(t)), str),
    "optimize": (
        lambda x, t: dlagraph.optimize(x, "fp32", compile=False, example_input=_x(x)),
        lambda m: _output_shape(m),
    ),
    "export": (
        lambda x, t: dlagraph.export(x, "torchscript", t / "export", size=(32, 32), force=True),
        lambda r: (r.metadata["input"]["shape"], r.max_error < 1e-4),
    ),
    "spec_to_yaml": (lambda x, t: dlagraph.spec_to_yaml(x), str),
    "summarize": (lambda x, t: dlagraph.summarize(x), lambda s: (s.params, s.macs, s.input_size)),
}
SLOW = {"export"}  # an export and its check per form: the quick run keeps the preset's


def _network_cases() -> list[Any]:
    cases = []
    for name in sorted(NETWORK_INPUTS):
        for form in sorted(network_forms(name)):
            marks = [pytest.mark.slow] if name in SLOW and form != "preset" else []
            cases.append(pytest.param(name, form, marks=marks, id=f"{name}-{form}"))
    return cases


@pytest.mark.parametrize(("name", "form"), _network_cases())
def test_each_documented_network_form(name: str, form: str, tmp_path: Path) -> None:
    """``name`` called with the network as ``form`` works, and gives what it gives for the
    preset name (timm's name: what it gives for the equal preset)."""
    call, key = CALLS[name]
    if form == "timm name":  # the preset of that name
        with pytest.warns(
            dlagraph.DlagraphWarning, match=f"'{TIMM}' is timm's name of the preset '{TIMM_PRESET}'"
        ):
            got = call(TIMM, tmp_path)
        assert key(got) == key(call(TIMM_PRESET, tmp_path))
        return
    assert form in NETWORKS, f"{name} documents a {form!r} input: add a value for it here"
    with (
        pytest.warns(dlagraph.DlagraphWarning, match=r"assumed \(from the checkpoint\)")
        if form == "checkpoint file"
        else contextlib.nullcontext()
    ):  # what the weights cannot show, said
        got = call(NETWORKS[form](tmp_path), tmp_path)
    if form in ("module", "generated", "checkpoint file"):
        key(got)  # a module's result depends on its weights: it runs
        return
    same = "preset" if "preset" in network_forms(name) else "spec"
    want = call(NETWORKS[same](tmp_path), tmp_path)
    assert key(got) == key(want), f"{name}({form}) differs from {name}({same})"


def _checkpoint_cases() -> list[Any]:
    return [
        pytest.param(
            name,
            form,
            id=f"{name}-{form}",
            marks=[pytest.mark.slow] * (name in SLOW and "string" in form),
        )
        for name in sorted(CHECKPOINT_INPUTS)
        for form in sorted(checkpoint_forms(name))
    ]


@pytest.mark.parametrize(("name", "form"), _checkpoint_cases())
def test_each_documented_checkpoint_form(name: str, form: str, tmp_path: Path) -> None:
    """Each function that takes a checkpoint takes it as a file (``str`` or ``Path``) or a
    state dict, as its signature says, and reads the same tensors from each."""
    assert form in CHECKPOINTS, f"{name} documents a {form!r} checkpoint: add a value for it here"
    value = CHECKPOINTS[form](tmp_path)
    want = torch.load(_checkpoint(tmp_path), weights_only=True)
    if name == "build_module":
        got = dlagraph.build_module(TINY, weights=value).state_dict()
        assert all(torch.equal(got[k], v) for k, v in want.items())
    elif name == "load_weights":
        model = dlagraph.build_module(TINY)
        dlagraph.load_weights(model, value)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    elif name in ("infer_spec", "infer_checkpoint"):
        spec = getattr(dlagraph, name)(value)
        spec = spec.spec if name == "infer_checkpoint" else spec
        assert dlagraph.summarize(spec, (32, 32)).params == dlagraph.summarize(TINY).params
    elif name == "export":
        result = dlagraph.export(TINY, "torchscript", tmp_path / "e", size=(32, 32), weights=value)
        assert result.max_error < 1e-4 and "sha256" in str(result.metadata["weights"])
    else:
        raise AssertionError(f"{name}: say here how its checkpoint is checked")


# --- every runtime and format in each of its precisions ---------------------------------------


def _precision_cases(registry: Any, cheap: set[tuple[str, str]]) -> list[Any]:
    return [
        pytest.param(
            name, p, id=f"{name}-{p}", marks=[] if (name, p) in cheap else [pytest.mark.slow]
        )
        for name in sorted(registry.names())
        for p in registry.get(name).precisions
    ]


def _calibration() -> list[Any]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(4, 1, 32, 32, generator=g) for _ in range(2)]


@pytest.mark.parametrize(("backend", "precision"), _precision_cases(RUNTIMES, {("torch", "fp32")}))
def test_optimize_on_each_runtime_in_each_precision(backend: str, precision: str) -> None:
    """``optimize(model, precision, backend=...)`` for every registered runtime and each
    precision it declares; the result computes the model's outputs (within the precision's
    error)."""
    model = dlagraph.build_module(TINY).eval()
    cal = _calibration() if precision == "int8" else None
    x = _calibration()[0]
    with bf16_warning() if precision == "bf16" else contextlib.nullcontext():
        fast = dlagraph.optimize(
            model, precision, cal, backend=backend, compile=False, example_input=x
        )
    with torch.no_grad():
        want, got = model(x), fast(x).float()
    error = ((got - want).abs().max() / want.abs().max()).item()
    assert error < {"fp32": 1e-4, "bf16": 0.1, "int8": 0.5}[precision], (backend, precision, error)


@pytest.mark.parametrize(
    "precision", sorted({p for name in RUNTIMES.names() for p in RUNTIMES.get(name).precisions})
)
def test_optimize_auto_in_each_precision(
    precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``backend="auto"`` (the docstring's other backend) from a preset name, as its docstring
    offers for timing, in each precision a runtime declares: it picks a candidate and says why.
    (Only the PyTorch runtime, uncompiled: fast; tests/test_auto.py and the slow tests above
    build the others.)"""
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    cal = _calibration() if precision == "int8" else None
    with contextlib.nullcontext():  # auto measures bf16 against fp32: no warning
        fast = dlagraph.optimize(
            TINY, precision, cal, backend="auto", example_input=_calibration()[0],
            cache=tmp_path / "a.json", compile=False,
        )  # fmt: skip
    assert fast.auto.chosen in fast.auto.kept and fast(X).shape == (1, 10)


@pytest.mark.parametrize(("fmt", "precision"), _precision_cases(FORMATS, {("torchscript", "fp32")}))
def test_export_in_each_format_and_precision(fmt: str, precision: str, tmp_path: Path) -> None:
    """``export(..., format, precision=...)`` for every registered format and each precision it
    declares, from a preset name with random calibration where int8 needs it; the export's own
    check passes within the precision's bound."""
    with bf16_warning() if precision == "bf16" else contextlib.nullcontext():
        result = dlagraph.export(
            TINY,
            fmt,
            tmp_path,
            precision=precision,
            calibration="random" if precision == "int8" else None,
            calibration_images=8,
            size=(32, 32),
        )
    assert result.metadata["precision"] == precision and result.files
    assert result.max_error < {"fp32": 1e-4, "bf16": 0.2, "int8": 0.5}[precision]


def test_hints_resolve() -> None:
    """The annotations this file reads are real types (a typo in one would hide a form)."""
    for name in {*NETWORK_INPUTS, *CHECKPOINT_INPUTS}:
        typing.get_type_hints(getattr(dlagraph, name))


# --- the command line: each command's input, as its --help names it --------------------------

CLI_FORMS = {
    r"preset name": {"preset", "timm name"},
    r"spec file": {"path"},
    r"folders? of them": {"folder"},
    r"checkpoint|\.pth": {"checkpoint"},
    r"\.safetensors": {"safetensors"},
}
# each command with its input as {}: the cheapest run that does the command's whole job
COMMANDS: dict[str, list[str]] = {
    "build": ["build", "{}", "-o", "{tmp}/out"],
    "draw": ["draw", "{}", "-o", "{tmp}/d.svg", "--force"],
    "codegen": ["codegen", "{}", "-o", "{tmp}/gen"],
    "diff": ["diff", "{}", TINY],
    "export": ["export", "{}", "--format", "torchscript", "--size", "32", "-o", "{tmp}/ex"],
    "fit": [
        "fit",
        "{}",
        "--size",
        "32",
        "--max-params",
        "100M",
        "--trials",
        "2",
        "--no-plot",
        "-o",
        "{tmp}/fit",
    ],  # fmt: skip
    "bench": [
        "bench",
        "{}",
        "--size",
        "32",
        "--batch",
        "1",
        "--runs",
        "1",
        "--backend",
        "openvino",  # no compile, and converts faster than ONNX exports: the form is the point
        "--precision",
        "fp32",
        "--no-timm-best",
    ],  # fmt: skip
    "infer": ["infer", "{}"],
}
SLOW_COMMANDS = {"bench", "export", "fit"}  # the quick run keeps each one's preset form
ALL_SLOW = {"bench"}  # its preset form too (rows timed in processes of their own: about 11 s)


def _cli_inputs() -> dict[tuple[str, str], str]:
    """Each command's input argument and its help text, from the parser itself."""
    from dlagraph.cli import parser

    found = {}
    sub = next(a for a in parser()._actions if a.dest == "command")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        for action in p._actions:
            if not action.option_strings and action.dest != "help" and action.help:
                found[(name, action.dest)] = action.help
    return found


def cli_forms(command: str) -> set[str]:
    forms: set[str] = set()
    for (name, _), text in _cli_inputs().items():
        if name == command:
            for pattern, found in CLI_FORMS.items():
                if re.search(pattern, text, re.I):
                    forms |= found
    return forms


def test_every_command_that_takes_a_network_is_called() -> None:
    """A command whose input's help names a form (a preset, a spec file, a checkpoint) is in
    COMMANDS, so each form it names is run below."""
    takes = {name for (name, _) in _cli_inputs() if cli_forms(name)}
    assert takes == set(COMMANDS), takes ^ set(COMMANDS)
    assert cli_forms("export") == {"preset", "timm name", "path", "checkpoint", "safetensors"}


def _cli_value(form: str, tmp: Path) -> str:
    if form in ("checkpoint", "safetensors"):
        path = _checkpoint(tmp)
        if form == "safetensors":
            from safetensors.torch import save_file

            path = tmp / "tiny.safetensors"
            save_file(torch.load(_checkpoint(tmp), weights_only=True), str(path))
        return str(path)
    if form == "folder":
        folder = tmp / "specs"
        folder.mkdir(exist_ok=True)
        (folder / f"{TINY}.yaml").write_text((ROOT / "specs" / f"{TINY}.yaml").read_text())
        return str(folder)
    return {"preset": TINY, "timm name": TIMM, "path": str(ROOT / "specs" / f"{TINY}.yaml")}[form]


def _cli_cases() -> list[Any]:
    return [
        pytest.param(
            name,
            form,
            id=f"{name}-{form}",
            marks=[pytest.mark.slow]
            * (name in ALL_SLOW or (name in SLOW_COMMANDS and form != "preset")),
        )
        for name in sorted(COMMANDS)
        for form in sorted(cli_forms(name))
    ]


@pytest.mark.parametrize(("command", "form"), _cli_cases())
def test_each_command_takes_each_form_its_help_names(
    command: str, form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dlagraph.cli import main

    value = _cli_value(form, tmp_path)
    args = [a.replace("{}", value).replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]]
    assert main(args) == 0, capsys.readouterr()
    out = capsys.readouterr()
    if form == "timm name":  # one line says which preset it is
        assert f"'{TIMM}' is timm's name of the preset '{TIMM_PRESET}'" in out.out + out.err
    if command == "bench" and form == "timm name":  # timm's model is the baseline it names
        assert f"| vs timm {TIMM}, fp32 eager |" in out.out and "| dlagraph, fp32 eager" in out.out
        assert "bf16 autocast" not in out.out  # --no-timm-best
