"""DAG -> readable, standalone PyTorch source (one ``.py`` file that imports only torch).

It prints the op definitions of :mod:`dlagraph.ir.ops`, as fx's codegen prints its graph: ``__init__``
constructs every node's ``module`` expression in the IR's registration order (same state_dict keys
and order, same init under the same seed as the interpreter), and ``forward`` has one statement per
DAG node in topological order: its ``call`` expression, inputs in port order, with the op's comment.
The template (``templates/module.py.j2``) holds layout only; block classes and helpers are copied
from the module library the interpreter runs (:mod:`.sources`). No torch here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jinja2
import networkx as nx
import yaml

from ..._version import __version__
from ...base.errors import CodegenError, SpecError, one_line
from ...base.io import MARKER
from ...base.names import class_name
from ...ir.analysis import Summary, default_cfg, default_input_size, static_params
from ...ir.compile import compile_spec
from ...ir.graph import check, feature_info, op, view
from ...ir.ops import Expr, Sym
from ...spec import Spec, resolve_spec_path
from .forward import bodies
from .layout import call_parts, literal, source, wrap_statement
from .sources import (
    block_source,
    builtin_source,
    generated_names,
    in_library_order,
    with_dependencies,
)

__all__ = ["generate_source"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dlagraph.backends.codegen", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


def _callees(value: Any) -> list[Expr]:
    """Every call in a module expression (nested ones too)."""
    if isinstance(value, Expr):
        return [value] + [
            c for a in (*value.args, *(v for _, v in value.kwargs)) for c in _callees(a)
        ]
    return []


def _init_lines(g: nx.DiGraph, classes: dict[str, Any], helpers: set[str]) -> list[str]:
    lines: list[str] = []
    made: set[str] = set()
    for n in g.graph["modules"]:
        a = g.nodes[n]
        path = a["layout"]["module"]
        parts = path.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in made:
                lines.append(f"self.{parent} = nn.Module()")
                made.add(parent)
        expr = op(g, n).module(view(g, n))
        for call in _callees(expr):
            if call.source is not None:
                classes.setdefault(call.fn, call.source)
            elif "." not in call.fn:
                helpers.add(call.fn)
        lines += wrap_statement(f"self.{path}", *call_parts(expr, [], None))
        made.add(path)
    return lines


def _timm_attributes(g: nx.DiGraph) -> list[str]:
    """``__init__``'s last lines for a classifier: the attributes timm's model API reads."""
    info = feature_info(g)
    cfg: dict[str, Any] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in default_cfg(g).items()
    }
    cfg["num_classes"] = Sym("num_classes", 0)
    cfg["input_size"] = [Sym("in_chans", 0), *cfg["input_size"][1:]]
    levels = [
        f'    {{"num_chs": {f["num_chs"]}, "reduction": {f["reduction"]}, '
        f'"module": {literal(f["module"])}}},'
        for f in info
    ]
    return [
        "self.num_classes = num_classes",
        "self.in_chans = in_chans",
        f"self.num_features = self.head_hidden_size = {info[-1]['num_chs']}",
        "self.grad_checkpointing = False",
        f"self.num_levels = {len(info)}  # levels kept (prune_intermediate_layers lowers it)",
        "self.feature_info = [",
        *levels,
        "]",
        "self.pretrained_cfg = {",
        *(f"    {literal(k)}: {source(v, [], None)}," for k, v in cfg.items()),
        "}",
        "self.default_cfg = self.pretrained_cfg",
    ]


def _module_of(step: str) -> str:
    """``self.forward_level3`` -> ``self.level3``: the module a backbone step runs."""
    return step.replace("self.forward_", "self.", 1)


def _spec_hash(data: dict[str, Any]) -> str:
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _origin(source_: Any, g: nx.DiGraph) -> tuple[str, str, str]:
    """``(what the header names, sha256 prefix, the spec argument to regenerate with)``."""
    if isinstance(source_, (str, Path)):
        try:
            p = resolve_spec_path(source_)
        except SpecError:
            p = None
        if p is not None and p.is_file():
            digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            if Path(source_).exists():
                shown = one_line(p.as_posix())
                return shown, digest, shown
            return f"preset {source_}", digest, str(source_)
    if isinstance(source_, (str, Path)):  # a label given by the caller
        return one_line(str(source_)), _spec_hash(g.graph["spec"]), "SPEC"
    what = "a compiled graph" if isinstance(source_, nx.DiGraph) else "a spec mapping"
    return what, _spec_hash(g.graph["spec"]), "SPEC"


def generate_source(
    spec: Spec | str | Path | dict[str, Any] | nx.DiGraph,
    *,
    source_path: str | None = None,
    fold_bn: bool = False,
    summary: Summary | None = None,
) -> str:
    """Render the standalone PyTorch source of a spec (or compiled DAG).

    The file defines the block classes it needs and one model class named after the spec
    (``dla104_s`` -> ``Dla104S``) that constructs with no arguments and accepts ``num_classes``
    (classifier heads) and ``in_chans``. Output is byte-identical across runs and hash seeds.
    With ``fold_bn`` the class also gets ``fold_bn()``: after loading weights, it folds every
    BatchNorm into its conv and switches to channels_last, for inference. ``summary``: the
    graph's :func:`~dlagraph.summarize` where the caller has it (``dlagraph build``); the forward's
    order of least memory reads it when it is at the default input size, the size that order is
    computed at (so the file never depends on the size a caller analysed).

    Raises:
        SpecError: for an invalid spec.
        GraphError: for a graph given directly that does not pass the lint.
        CodegenError: if a registered block's source cannot be copied.

    Example:
        >>> src = generate_source("dla36")
        >>> "class Dla36(TimmModelAPI, nn.Module):" in src
        True
    """
    if isinstance(spec, nx.DiGraph):
        check(spec)  # a graph from elsewhere (a reloaded .graph.json) is linted, not trusted
        g = spec
    else:
        g = compile_spec(spec)
    origin = _origin(source_path if source_path else spec, g)
    facts = g.graph
    classes: dict[str, Any] = {}
    helpers = {"init_weights"} if facts["init"] == "dla" else set()
    helpers |= {"fold_batchnorm", "_fold_pair", "fold_into"} if fold_bn else set()
    init_lines = _init_lines(g, classes, helpers)
    clash = sorted({c for c, bt in classes.items() if not bt.builtin} & generated_names())
    if clash:
        raise CodegenError(
            f"registered block class {clash[0]!r} has the name of a helper or import of the "
            f"generated file; rename the class"
        )
    # the forward's order is computed at the default input size, so that the file is the same
    # whatever size a caller analysed: a summary at another size is not this one
    if summary is not None and summary.input_size != default_input_size(g):
        summary = None
    body = bodies(g, summary)
    classifier = bool(facts["classifier"])
    if classifier:
        helpers |= {"TimmModelAPI", "feature_take_indices"}
    helpers |= {"read_weights", "assign_state"}  # from_weights
    sources = [block_source(bt) for bt in classes.values()]
    helpers = with_dependencies(helpers, sources)
    sources += [builtin_source(h) for h in in_library_order(helpers - set(classes))]
    text = "\n".join(sources + body.forward + [ln for lv in body.levels for ln in lv["lines"]])
    typing = [t for t in ("List", "Tuple") if f"{t}[" in text]  # a registered block's choice
    imports = ["import math"] if "math." in text else []
    if typing:
        imports.append(f"from typing import {', '.join(typing)}")
    imports += ["", "import torch", "from torch import nn"]
    if "F." in text:
        imports.append("from torch.nn import functional as F")
    if "torch.utils.checkpoint" in text:
        imports.insert(imports.index("import torch") + 1, "import torch.utils.checkpoint")
    if imports[0] == "":
        imports = imports[1:]
    init_args = (
        "" if facts["num_classes"] is None else f", num_classes: int = {facts['num_classes']}"
    )
    init_args += f", in_chans: int = {facts['in_channels']}"
    title = f"{facts['paper_name']} ({facts['name']})" if facts["paper_name"] else facts["name"]
    title = one_line(title)
    fold = " --fold-bn" if fold_bn else ""
    return _ENV.get_template("module.py.j2").render(
        header=(
            f"# {MARKER} {__version__} from {origin[0]} (sha256 {origin[1]}).\n"
            f"# Do not edit; regenerate with `dlagraph codegen {origin[2]}{fold} -o DIR`."
        ),
        docstring=(
            f"{title}: Deep Layer Aggregation (Yu, Wang, Darrell).\n\n"
            f"Paper: https://arxiv.org/abs/1707.06484\n"
            f"{static_params(g):,} parameters with the spec's defaults; layout {one_line(facts['layout'])}"
            + (f", equals {one_line(facts['reference'])}" if facts["reference"] else "")
            + ".\n"
        ),
        imports=imports,
        class_name=class_name(facts["name"], taken=generated_names() | set(classes)),
        sources=[s.rstrip("\n") for s in sources],
        class_doc=f"{title}. Input sides must be multiples of {facts['total_stride']}.",
        init_args=init_args,
        init_lines=init_lines,
        attr_lines=_timm_attributes(g) if classifier else [],
        bases="TimmModelAPI, nn.Module" if classifier else "nn.Module",
        levels=body.levels,
        steps=body.steps,
        prunable=[(i, _module_of(call)) for i, call in body.steps if i > 0],
        forward_lines=body.forward,
        classifier=classifier,
        fold_bn=fold_bn,
        dla_init=facts["init"] == "dla",
        return_type=body.return_type,
    )
