"""DAG -> readable, standalone PyTorch source (one ``.py`` file that imports only torch).

The template (``templates/module.py.j2``) holds layout only; every name, argument list and comment is
computed here. Block classes are copied from :mod:`dlagraph.nn.blocks` (or from the registered
class), so the generated file runs the same code as the interpreter; ``__init__`` creates the
modules in the IR's registration order (same state_dict keys and order, same init under the same
seed) and ``forward`` has one statement per DAG node in topological order, inputs in port order.
"""

from __future__ import annotations

import ast
import builtins
import enum
import hashlib
import inspect
import math
import textwrap
from pathlib import Path
from typing import Any

import jinja2
import networkx as nx

from .. import __version__
from ..blocks import get_block_type
from ..compile import compile_spec
from ..errors import CodegenError
from ..graph import check, inputs, topo_order
from ..io import MARKER
from ..load import load_spec, spec_to_yaml
from ..names import class_name, var_name
from ..spec import Spec

__all__ = ["generate_source", "class_name", "var_name"]

WIDTH = 100  # ruff's line length: lines are wrapped here exactly as `ruff format` would
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dlagraph.codegen", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
# helpers every generated file needs, copied from dlagraph.nn.blocks by name
_HELPERS = (
    "DlaRoot",
    "conv_bn_relu",
    "project",
    "ida_node",
    "bilinear_up",
    "init_weights",
    "fold_batchnorm",
    "_fold_pair",
)
_ALLOWED_GLOBALS = {"torch", "nn", "math", "List", "F"} | set(dir(builtins))


def _literal(value: Any) -> str:
    """Python source for an option value: a literal that evaluates back to it (``float("nan")``
    for non-finite floats, the value of an Enum), or a CodegenError."""
    if isinstance(value, enum.Enum):
        return _literal(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return f'float("{value}")' if value == value else 'float("nan")'
    if isinstance(value, (list, tuple)):
        items = [_literal(v) for v in value]
        if isinstance(value, list):
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in value.items()) + "}"
    raise CodegenError(
        f"a block option of type {type(value).__name__} cannot be written into generated "
        f"source; use numbers, strings, booleans, enums, or lists and mappings of them"
    )


def _module_expr(a: dict[str, Any], classes: dict[str, type]) -> tuple[str, list[str]]:
    op = a["op"]
    if op == "conv":
        cin = "in_chans" if a.get("role") == "stem" else str(a["in_channels"])
        args = [cin, str(a["out_channels"]), str(a["kernel_size"])]
        if a["convs"] != 1:
            args.append(f"convs={a['convs']}")
        if a["stride"] != 1:
            args.append(f"stride={a['stride']}")
        return "conv_bn_relu", args
    if op == "downsample":
        return "nn.MaxPool2d", [str(a["stride"]), f"stride={a['stride']}"]
    if op == "project":
        return "project", [str(a["in_channels"]), str(a["out_channels"])]
    if op == "aggregate" and a.get("sequential"):
        return ("ida_node", [str(a["in_channels"]), str(a["out_channels"]), str(a["kernel_size"])])
    if op == "aggregate":
        return (
            "DlaRoot",
            [
                str(a["in_channels"]),
                str(a["out_channels"]),
                f"kernel_size={a['kernel_size']}",
                f"residual={a['residual']}",
            ],
        )
    if op == "pool":
        return "nn.AdaptiveAvgPool2d", ["1"]
    if op == "dropout":
        return "nn.Dropout", [repr(a["p"])]
    classes_arg = "num_classes" if a.get("num_classes_arg") else str(a["out_channels"])
    if op == "classifier":
        conv = f"nn.Conv2d({a['in_channels']}, {classes_arg}, 1, bias=True)"
        if a.get("sequential"):
            return "nn.Sequential", [conv]
        return "nn.Conv2d", [str(a["in_channels"]), classes_arg, "1", "bias=True"]
    if op == "upsample":
        args = [classes_arg, str(a["factor"])]
        return "bilinear_up", args if a["trainable"] else args + ["trainable=False"]
    if op == "log_softmax":
        return "nn.LogSoftmax", ["dim=1"]
    if op == "block":
        bt = get_block_type(a["block"])
        cls = bt.resolve()
        classes.setdefault(cls.__name__, cls)
        opts = bt.options.model_validate(a["block_options"])
        kw = bt.module_args(
            a["in_channels"], a["out_channels"], a["stride"], a.get("dilation", 1), opts
        )
        pos = [repr(kw.pop("in_channels")), repr(kw.pop("out_channels"))]
        bad = [k for k in kw if not (isinstance(k, str) and k.isidentifier())]
        if bad:
            raise CodegenError(f"block {a['block']!r}: argument names {bad} are not identifiers")
        return cls.__name__, pos + [f"{k}={_literal(v)}" for k, v in kw.items()]
    raise CodegenError(f"op {op!r} has no module")


def _comment(g: nx.DiGraph, n: str) -> str:
    """What a reader cannot see at the call: channels, stride, paper role, spec path."""
    a = g.nodes[n]
    op, src = a["op"], a.get("spec_path", "")
    chans = f"{a.get('in_channels')} -> {a.get('out_channels')} ch"
    if op == "downsample":
        used_by_root = any(g.nodes[u]["op"] == "aggregate" for u in g.successors(n))
        what = "S(x), eq. 5" if used_by_root else "for the shortcut"
        return f"2x2 max pool to stride {a['reduction']} ({src}, {what})"
    if op == "project":
        return f"shortcut: {chans} ({src})"
    if op == "aggregate":
        eq = {"eq2": "eq. 2", "eq5": "eq. 5"}.get(a.get("eq", ""), "")
        return f"N: {chans} ({src}, {eq}{', residual' if a['residual'] else ''})"
    if op == "block":
        return f"{a.get('role', '')} block: {chans}, stride {a['reduction']} ({src})".lstrip()
    return f"{chans}, stride {a['reduction']} ({src})"


def _wrap_statement(
    lhs: str, fn: str, args: list[str], comment: str | None = None, indent: int = 8
) -> list[str]:
    """``lhs = fn(args)  # comment``, laid out exactly as ``ruff format`` would: on one line if it
    fits (the comment moves above the statement when only the comment does not fit), else the
    arguments on one indented line, else one argument per line."""
    flat = f"{lhs} = {fn}({', '.join(args)})"
    if comment and indent + len(flat) + 4 + len(comment) <= WIDTH:
        return [f"{flat}  # {comment}"]
    above = [f"# {comment}"] if comment else []
    if indent + len(flat) <= WIDTH:
        return above + [flat]
    inner = ", ".join(args)
    if indent + 4 + len(inner) <= WIDTH:
        return above + [f"{lhs} = {fn}(", f"    {inner}", ")"]
    if len(args) == 1 and args[0].startswith("["):  # a single list argument is hugged
        items = args[0][1:-1].split(", ")
        return (
            above + [f"{lhs} = {fn}(", "    ["] + [f"        {x}," for x in items] + ["    ]", ")"]
        )
    return above + [f"{lhs} = {fn}("] + [f"    {x}," for x in args] + [")"]


def _last_uses(g: nx.DiGraph, order: list[str]) -> dict[str, list[str]]:
    """``{node: [variables read for the last time there]}``, outputs excepted."""
    pos = {n: i for i, n in enumerate(order)}
    last: dict[str, str] = {}
    for n in order:
        for u in inputs(g, n):
            if g.nodes[u]["op"] != "input" and (u not in last or pos[n] > pos[last[u]]):
                last[u] = n
    out: dict[str, list[str]] = {}
    for u, n in last.items():
        if g.nodes[n]["op"] != "output":
            out.setdefault(n, []).append(var_name(u))
    return out


def _del_lines(names: list[str], indent: int = 8) -> list[str]:
    """``del a, b`` lines within the width: activations are freed as soon as nothing reads them
    (as in timm's nested forwards), which keeps peak memory and CPU time equal to timm's."""
    lines, cur = [], "del"
    for name in names:
        nxt = f"{cur} {name}" if cur == "del" else f"{cur}, {name}"
        if indent + len(nxt) > WIDTH:
            lines.append(cur)
            nxt = f"del {name}"
        cur = nxt
    return lines + [cur]


def _forward_lines(g: nx.DiGraph) -> tuple[list[str], str]:
    lines: list[str] = []
    ret, kind = "", g.graph.get("output_kind", "tensor")
    order = [n for n in topo_order(g) if not g.nodes[n].get("unused")]
    frees = _last_uses(g, order)
    for n in order:
        a = g.nodes[n]
        if a.get("unused") or a["op"] == "input":
            continue
        ins = [var_name(u) if g.nodes[u]["op"] != "input" else "x" for u in inputs(g, n)]
        v, mod, op = var_name(n), f"self.{a.get('module', n)}", a["op"]
        if op == "output":
            ret = {
                "tensor": f"return {ins[0]}",
                "tuple": f"return {', '.join(ins)}",
                "list": f"return [{', '.join(ins)}]",
            }[kind]
        elif op == "aggregate" and a.get("sequential"):
            lines += _wrap_statement(v, mod, [f"torch.cat([{', '.join(ins)}], 1)"], _comment(g, n))
        elif op == "aggregate":
            lines += _wrap_statement(v, mod, [f"[{', '.join(ins)}]"], _comment(g, n))
        elif op == "block":
            args = ins if len(ins) == 2 else [ins[0], ins[0]]
            lines += _wrap_statement(
                v, mod, args, _comment(g, n) + ("" if len(ins) == 2 else ", identity shortcut")
            )
        elif op == "classifier" and a.get("flatten"):
            lines += _wrap_statement(
                v,
                "torch.flatten",
                [f"{mod}({ins[0]})", "1"],
                f"{a['in_channels']} -> num_classes logits",
            )
        elif op == "interpolate":
            lines += _wrap_statement(
                v,
                "F.interpolate",
                [
                    ins[0],
                    f"scale_factor={float(a['scale'])!r}",
                    'mode="bilinear"',
                    "align_corners=False",
                ],
                f"fixed bilinear x{a['scale']} ({a.get('spec_path', '')})",
            )
        else:
            lines += _wrap_statement(v, mod, ins, _comment(g, n))
        if n in frees:
            lines += _del_lines(frees[n])
    types = {
        "tensor": "torch.Tensor",
        "list": "list[torch.Tensor]",
        "tuple": "tuple[torch.Tensor, torch.Tensor]",
    }
    return lines + [ret], types[kind]


def _init_lines(g: nx.DiGraph, classes: dict[str, type]) -> list[str]:
    lines: list[str] = []
    made: set[str] = set()
    for n in g.graph["modules"]:
        path = g.nodes[n].get("module", n)
        parts = path.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in made:
                lines.append(f"self.{parent} = nn.Module()")
                made.add(parent)
        lines += _wrap_statement(f"self.{path}", *_module_expr(g.nodes[n], classes))
        made.add(path)
    return lines


def _source_of(obj: Any) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as e:
        raise CodegenError(f"cannot copy the source of {obj!r} into generated code: {e}") from None
    src = _strip_contract(src)
    free = _free_names(src) - _ALLOWED_GLOBALS - set(_HELPERS)
    if free:
        raise CodegenError(
            f"{getattr(obj, '__qualname__', obj)} uses names a standalone file cannot import: "
            f"{', '.join(sorted(free))}; a registered block may use only torch, nn, F, math, List"
        )
    return src.rstrip() + "\n"


def _strip_contract(src: str) -> str:
    """Drop what only dlagraph needs from a block class: its registration decorator and the
    ``Options`` / ``layers`` contract members (they use pydantic and dlagraph, not torch)."""
    tree = ast.parse(src)
    top = tree.body[0]
    lines = src.splitlines()
    drop: set[int] = set()
    if isinstance(top, (ast.ClassDef, ast.FunctionDef)):
        drop |= set(range(0, top.lineno - 1))  # decorators
    if isinstance(top, ast.ClassDef):
        for node in top.body:
            named = getattr(node, "name", None)
            if named in ("Options", "layers"):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                drop |= set(range(first - 1, node.end_lineno or node.lineno))
    kept = [line for i, line in enumerate(lines) if i not in drop]
    out, blank = [], 0
    for line in kept:  # no runs of blank lines where members were removed
        blank = blank + 1 if not line.strip() else 0
        if blank <= 1:
            out.append(line)
    return "\n".join(out).rstrip() + "\n"


def _free_names(src: str) -> set[str]:
    tree = ast.parse(src)
    loaded = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    bound = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
    }
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        if isinstance(node, ast.arguments):
            bound |= {a.arg for a in node.args + node.kwonlyargs + node.posonlyargs}
            bound |= {a.arg for a in (node.vararg, node.kwarg) if a is not None}
        if isinstance(node, ast.comprehension):
            bound |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return loaded - bound


def _one_line(text: str) -> str:
    """A path shown in a comment line: never a raw newline or control character."""
    return text if text.isprintable() else repr(text)


def _origin(source: Any, spec: Spec) -> tuple[str, str]:
    if isinstance(source, (str, Path)) and Path(source).exists():
        p = Path(source)
        return (
            _one_line(p.as_posix()),
            hashlib.sha256(p.read_bytes()).hexdigest()[:12],
        )
    return "a spec mapping", hashlib.sha256(spec_to_yaml(spec).encode()).hexdigest()[:12]


def generate_source(
    spec: Spec | str | Path | dict[str, Any] | nx.DiGraph,
    *,
    source_path: str | None = None,
    fold_bn: bool = False,
) -> str:
    """Render the standalone PyTorch source of a spec (or compiled DAG).

    The file defines the block classes it needs and one model class named after the spec
    (``dla104_s`` -> ``Dla104S``) that constructs with no arguments and accepts ``num_classes``
    (classifier heads) and ``in_chans``. Output is byte-identical across runs and hash seeds.
    With ``fold_bn`` the class also gets ``fold_bn()``: after loading weights, it folds every
    BatchNorm into its conv and switches to channels_last, for inference.

    Raises:
        SpecError: for an invalid spec.
        CodegenError: if a registered block's source cannot be copied.

    Example:
        >>> src = generate_source("specs/dla36.yaml")
        >>> "class Dla36(nn.Module):" in src
        True
    """
    if isinstance(spec, nx.DiGraph):
        check(spec)  # a graph from elsewhere (a reloaded .graph.json) is linted, not trusted
        g, sp = spec, Spec.model_validate(spec.graph["spec"])
        origin = (
            _one_line(source_path or "a compiled graph"),
            hashlib.sha256(spec_to_yaml(sp).encode()).hexdigest()[:12],
        )
    else:
        sp = load_spec(spec)
        g = compile_spec(sp)
        origin = _origin(spec, sp)
        if source_path:
            origin = (_one_line(source_path), origin[1])
    classes: dict[str, type] = {}
    init_lines = _init_lines(g, classes)
    clash = sorted(set(classes) & (set(_HELPERS) | _ALLOWED_GLOBALS))
    if clash:
        raise CodegenError(
            f"registered block class {clash[0]!r} has the name of a helper or import of the "
            f"generated file; rename the class"
        )
    model_class = class_name(sp.name, taken=set(classes))
    forward_lines, return_type = _forward_lines(g)
    from ..analysis import summarize

    params = summarize(g, (sp.total_stride,) * 2).params
    sources = [_source_of(c) for c in classes.values()]
    from ..nn import blocks as builtin

    used = "\n".join(init_lines)
    wanted = {"init_weights"} | ({"fold_batchnorm", "_fold_pair"} if fold_bn else set())
    sources += [_source_of(getattr(builtin, h)) for h in _HELPERS if f"{h}(" in used or h in wanted]
    body = "\n".join(sources + forward_lines)
    typing = [t for t in ("List", "Tuple") if f"{t}[" in body]  # a registered block's choice
    imports = ["import math"] if "math." in body else []
    if typing:
        imports.append(f"from typing import {', '.join(typing)}")
    imports += ["", "import torch", "from torch import nn"]
    if "F." in body:
        imports.append("from torch.nn import functional as F")
    if imports[0] == "":
        imports = imports[1:]
    head = sp.head
    init_args = (
        f", in_chans: int = {sp.in_channels}"
        if head.type == "features"
        else f", num_classes: int = {head.num_classes}, in_chans: int = {sp.in_channels}"
    )
    title = f"{sp.paper_name} ({sp.name})" if sp.paper_name else sp.name
    fold = " --fold-bn" if fold_bn else ""
    cmd = (
        f"dlagraph codegen {origin[0]}{fold} -o DIR"
        if origin[0].endswith((".yaml", ".yml"))
        else f"dlagraph codegen SPEC{fold} -o DIR"
    )

    text = _ENV.get_template("module.py.j2").render(
        header=(
            f"# {MARKER} {__version__} from {origin[0]} (sha256 {origin[1]}).\n"
            f"# Do not edit; regenerate with `{cmd}`."
        ),
        docstring=(
            f"{title}: Deep Layer Aggregation (Yu, Wang, Darrell).\n\n"
            f"Paper: https://arxiv.org/abs/1707.06484\n"
            f"{params:,} parameters with the spec's defaults; layout {sp.layout}"
            + (f", equals {sp.reference}" if sp.reference else "")
            + ".\n"
        ),
        imports=imports,
        class_name=model_class,
        sources=[s.rstrip("\n") for s in sources],
        class_doc=(f"{title}. Input sides must be multiples of {sp.total_stride}."),
        init_args=init_args,
        init_lines=init_lines,
        forward_lines=forward_lines,
        fold_bn=fold_bn,
        return_type=return_type,
    )
    return text
