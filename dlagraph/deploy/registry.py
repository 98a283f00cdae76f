"""The runtimes ``dlagraph.optimize`` builds for and the formats ``dlagraph export`` writes, as two
registries in the shape of ``register_block`` / ``register_head``: adding one is one module that
calls :func:`register_runtime` or :func:`register_format`, and ``optimize(backend=...)``,
``auto``, ``dlagraph bench --backend`` and ``dlagraph export --format`` pick it up; nothing
switches on a runtime's or a format's name.

No torch here (the command line lists the choices without it): an entry's ``build`` / ``make``
is a function, or a ``"module:function"`` reference imported when first used, which is how the
built-ins below point at the modules that hold them.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base.errors import DeployError, RegistryError, safe_repr
from ..base.registry import Registry

__all__ = [
    "PRECISIONS",
    "Runtime",
    "Format",
    "register_runtime",
    "register_format",
    "unregister_runtime",
    "unregister_format",
    "get_runtime",
    "get_format",
    "registered_runtimes",
    "registered_formats",
]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
# int8's default budget: half a point of top-1 (or of the user's metric, in its own units); here,
# torch-free, for the CLI's --help
MAX_DROP = 0.005
EXTRA = "pip install 'dlagraph[deploy]'"


def _installed(package: str) -> bool:
    try:  # a dotted name whose parent is missing raises instead of answering None
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")


def _resolve(fn: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(fn):
        return fn
    module, _, name = fn.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise DeployError(f"{fn}: cannot be imported ({type(e).__name__}: {e})") from None
    if not callable(found):
        raise DeployError(f"{fn}: is not a function")
    return found  # type: ignore[no-any-return]


def _check_entry(kind: str, name: str, precisions: object, fn: object, what: str) -> None:
    name = safe_repr(name)[1:-1] if isinstance(name, str) else safe_repr(name)  # bounded echo
    ok = isinstance(precisions, tuple | list) and all(isinstance(p, str) for p in precisions)
    if not ok or not precisions or not set(precisions) <= set(PRECISIONS):  # type: ignore[arg-type]
        raise RegistryError(
            f"{kind} {name!r}: precisions must be a tuple of some of {', '.join(PRECISIONS)} "
            f"(got {safe_repr(precisions)})"
        )
    if not callable(fn) and not (isinstance(fn, str) and _REFERENCE.match(fn)):
        raise RegistryError(
            f"{kind} {name!r}: {what} must be a function or a 'module:function' reference "
            f"(got {safe_repr(fn)})"
        )


@dataclass(frozen=True)
class Runtime:
    """Where an optimized model runs.

    ``build(model, request)`` turns a built DLA (eval mode, not changed) into an inference
    module for a validated :class:`~dlagraph.deploy.request.DeployRequest` in one of
    ``precisions``; ``why_not`` says why any other precision is refused. ``packages`` must be
    importable for it to be available (else one line naming ``extra``); ``auto`` times it when
    ``auto`` is true. ``pad``: the channel multiple, by precision, that padding was measured to
    win at on this runtime (``dlagraph.deploy.rewrites``).
    """

    name: str
    title: str
    precisions: tuple[str, ...]
    build: Callable[..., Any] | str
    why_not: Mapping[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()
    extra: str = EXTRA
    auto: bool = True
    pad: Mapping[str, int] = field(default_factory=dict)

    def available(self) -> bool:
        return all(_installed(p) for p in self.packages)

    def padding(self, precision: str, rewrites: bool = True) -> int | None:
        """The channel multiple to pad to for ``precision`` (``prepare(model, pad)``), where
        padding was measured to win on this runtime and the request allows rewrites."""
        return self.pad.get(precision) if rewrites else None

    def require(self, precision: str) -> Callable[..., Any]:
        """Its build function, after one-line refusals: a precision it has not, or a package
        that is not installed."""
        return _require(self, precision, f"backend={self.name!r}", "builds", self.build)


@dataclass(frozen=True)
class Format:
    """A deployment artifact ``dlagraph export`` writes.

    ``make(net, x, request, dynamic, tmp)`` gets the folded model, the artifact's example input
    batch, the validated request (precision, int8's calibration batches), whether the batch is
    dynamic, and an empty scratch folder; it returns the artifact's bytes by file extension (one
    key per entry of ``extensions``) and a function that runs the artifact as written, read back
    by ``runtime``: a float32 NCHW batch in, the model's output structure out (tensors or numpy
    arrays).
    """

    name: str
    runtime: str
    extensions: tuple[str, ...]
    precisions: tuple[str, ...]
    make: Callable[..., Any] | str
    why_not: Mapping[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = ()
    extra: str = EXTRA
    help: str = ""
    # what loading the artifact needs beyond ``runtime``, by precision (the metadata says it)
    load: Mapping[str, str] = field(default_factory=dict)

    def require(self, precision: str) -> Callable[..., Any]:
        """Its make function, after the same refusals as :meth:`Runtime.require`."""
        return _require(self, precision, self.name, "writes", self.make)


def _require(
    entry: Runtime | Format, precision: str, who: str, verb: str, fn: Callable[..., Any] | str
) -> Callable[..., Any]:
    if precision not in entry.precisions:
        why = entry.why_not.get(precision, f"it {verb} {', '.join(entry.precisions)}")
        raise DeployError(f"{who} {precision}: not supported: {why}")
    for p in entry.packages:
        if not _installed(p):
            needs = who if isinstance(entry, Runtime) else f"{who} export"
            raise DeployError(f"{needs} needs {p}: {entry.extra}")
    return _resolve(fn)


RUNTIMES: Registry[Runtime] = Registry("runtime")
FORMATS: Registry[Format] = Registry("format")


def register_runtime(runtime: Runtime, *, replace: bool = False) -> Runtime:
    """Add a runtime: ``dlagraph.optimize(..., backend=runtime.name)``, ``auto`` and ``dlagraph
    bench --backend`` take it from then on."""
    if not isinstance(runtime, Runtime):
        raise RegistryError(f"register_runtime: give a Runtime (got {type(runtime).__name__})")
    _check_entry("runtime", runtime.name, runtime.precisions, runtime.build, "build")
    if runtime.name == "auto":
        raise RegistryError("runtime 'auto' is the choice among the runtimes, not one of them")
    return RUNTIMES.add(runtime.name, runtime, replace=replace)


def register_format(fmt: Format, *, replace: bool = False) -> Format:
    """Add an export format: ``dlagraph.export(..., format=fmt.name)`` and ``dlagraph export
    --format`` take it from then on."""
    if not isinstance(fmt, Format):
        raise RegistryError(f"register_format: give a Format (got {type(fmt).__name__})")
    _check_entry("format", fmt.name, fmt.precisions, fmt.make, "make")
    if (
        not isinstance(fmt.extensions, tuple | list)
        or not fmt.extensions
        or len(set(fmt.extensions)) != len(fmt.extensions)
        or not all(
            isinstance(e, str) and e.startswith(".") and e[1:].isalnum() for e in fmt.extensions
        )
    ):
        raise RegistryError(
            f"format {safe_repr(fmt.name)}: extensions must look like '.onnx', each once"
        )
    if not isinstance(fmt.help, str) or not isinstance(fmt.runtime, str):
        raise RegistryError(f"format {safe_repr(fmt.name)}: help and runtime must be texts")
    return FORMATS.add(fmt.name, fmt, replace=replace)


def unregister_runtime(name: str) -> None:
    RUNTIMES.remove(name)


def unregister_format(name: str) -> None:
    FORMATS.remove(name)


def get_runtime(name: object) -> Runtime:
    return RUNTIMES.get(name)


def get_format(name: object) -> Format:
    return FORMATS.get(name)


def registered_runtimes() -> list[str]:
    return RUNTIMES.names()


def registered_formats() -> list[str]:
    return FORMATS.names()


# --- the built-ins, in the order they are listed and timed --------------------------------------
# padding measured to win (docs/deployment.md, DLA-36 at width 0.6): compiled PyTorch fp32
# 1.15-1.31x and int8 1.04x, OpenVINO fp32 1.00-1.16x and int8 1.09x; ONNX Runtime was slower
# (0.75-0.81x) and bf16 was not measured (no CPU here has it natively)
SIMD_FP32 = 8  # fp32 lanes of AVX2; 16 on AVX2 was slower than 8 on every backend
_NO_BF16_ORT = "ONNX Runtime's CPU provider has no bf16 convolutions"

for _rt in (
    Runtime(
        "torch",
        "PyTorch",
        PRECISIONS,
        "dlagraph.deploy.pytorch:build",  # int8's torchao is checked where it is imported
        pad={"fp32": SIMD_FP32, "int8": SIMD_FP32},
    ),
    Runtime(
        "openvino",
        "OpenVINO",
        PRECISIONS,
        "dlagraph.deploy.openvino:build",
        packages=("openvino",),
        pad={"fp32": SIMD_FP32, "int8": SIMD_FP32},
    ),
    Runtime(
        "onnxruntime",
        "ONNX Runtime",
        ("fp32", "int8"),
        "dlagraph.deploy.onnxruntime:build",
        why_not={"bf16": _NO_BF16_ORT},
        packages=("onnxruntime", "onnxscript"),
    ),
):
    RUNTIMES.add(_rt.name, _rt, builtin=True)

for _fmt in (
    Format(
        "onnx",
        "ONNX Runtime",
        (".onnx",),
        ("fp32", "int8"),
        "dlagraph.deploy.onnxruntime:make",
        why_not={"bf16": _NO_BF16_ORT},
        packages=("onnxruntime", "onnxscript"),
        help="ONNX (torch.onnx's dynamo exporter; int8: ONNX Runtime's static QDQ)",
    ),
    Format(
        "openvino",
        "OpenVINO",
        (".xml", ".bin"),
        ("fp32", "int8"),
        "dlagraph.deploy.openvino:make",
        why_not={
            "bf16": "OpenVINO picks bf16 at run time on CPUs that have it "
            "(INFERENCE_PRECISION_HINT); export fp32"
        },
        packages=("openvino",),
        help="OpenVINO IR (openvino.convert_model; int8: NNCF)",
    ),
    Format(
        "pt2",
        "torch.export.load",
        (".pt2",),
        PRECISIONS,
        "dlagraph.deploy.pytorch:make_pt2",
        help="a torch.export program (int8: torchao's PT2E; load it after `import torchao`)",
        load={
            "int8": "import torchao (and torchvision, for deformable convs) before "
            "torch.export.load: they register the ops the program calls"
        },
    ),
    Format(
        "torchscript",
        "torch.jit.load",
        (".pt",),
        ("fp32", "bf16"),
        "dlagraph.deploy.pytorch:make_torchscript",
        why_not={"int8": "TorchScript has no maintained int8 path; use pt2, onnx or openvino"},
        help="TorchScript (torch.jit.trace + freeze)",
    ),
):
    FORMATS.add(_fmt.name, _fmt, builtin=True)
