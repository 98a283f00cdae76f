"""The aggregation nodes N (eq. 1-5) that concatenate their inputs: the backbone's ``DlaRoot``
and the official IDAUp node (CenterNet's summing node is in :mod:`.centernet`)."""

from __future__ import annotations

from typing_extensions import TypedDict

from ...blocks import Layer
from .core import Expr, In, Mem, NodeView, Op, _bn, _builtin, _chans, _conv, _where, box

__all__ = ["AggregateRec", "Aggregate", "IdaNodeRec", "IdaNode"]

_EQ = {"eq1": "eq. 1", "eq2": "eq. 2", "eq5": "eq. 5"}


class _Aggregation(Op):
    """What every aggregation node N shares: channels concatenated, maps joined."""

    def lint(self, v: NodeView) -> list[str]:
        out = []
        if sum(v.chans) != v["in_channels"]:
            parts = " + ".join(map(str, v.chans))
            out.append(
                f"expects {v['in_channels']} input channels, its inputs {list(v.inputs)} provide "
                f"{sum(v.chans)} ({parts})"
            )
        if v.get("residual") and v.chans and v.chans[0] != v["out_channels"]:
            out.append(
                f"residual input {v.inputs[0]!r} has {v.chans[0]} channels, the node outputs "
                f"{v['out_channels']}"
            )
        if len(set(v.reds)) > 1:
            out.append(f"inputs have different reductions {sorted(set(v.reds))}")
        return out

    def join_problem(self, v: NodeView, out: tuple[int, ...]) -> str | None:
        if len({tuple(x) for x in v.hw}) > 1:
            return "the joined feature maps differ (" + ", ".join(f"{h}x{w}" for h, w in v.hw) + ")"
        return None

    def comment(self, v: NodeView) -> str:
        res = "residual" if v.get("residual") else ""
        return f"N: {_chans(v)} {_where(v, _EQ.get(v.meta.get('eq') or '', ''), res)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        xlabel = f"{v['in_channels']}→{v['out_channels']}"
        label = "N+" if v.get("residual") else "N"
        size = {"width": "0.35", "fixedsize": "true", "fontsize": "11"}
        return box(label, "aggregate", "circle", xlabel=xlabel, **size)


class AggregateRec(TypedDict):
    in_channels: int
    out_channels: int
    kernel_size: int
    residual: bool


@_builtin
class Aggregate(_Aggregation):
    """N of eq. 1-5 (``DlaRoot``): concat in argument order -> conv -> BN (-> + input 0) -> ReLU."""

    name, record, concat = "aggregate", AggregateRec, "split"

    def layers(self, v: NodeView) -> list[Layer]:
        cin, cout = v["in_channels"], v["out_channels"]
        return [_conv("conv", cin, cout, v["kernel_size"]), _bn("bn", cout)]

    def module(self, v: NodeView) -> Expr:
        kw = (("kernel_size", v["kernel_size"]), ("residual", v["residual"]))
        return Expr("DlaRoot", (v["in_channels"], v["out_channels"]), kw)

    def memory(self, v: NodeView, out: int) -> Mem:
        # bn(conv(cat(xs))): the concatenation lives until the conv returns, which the BN saves
        cat, c = v["in_channels"] * v.hw[0][0] * v.hw[0][1], out
        return Mem(max(cat + c, 2 * c), cat + c, saves_output=True)

    def call(self, v: NodeView) -> Expr:
        return Expr("self", ([In(i) for i in range(len(v.inputs))],))


class IdaNodeRec(TypedDict):
    in_channels: int
    out_channels: int
    kernel_size: int


@_builtin
class IdaNode(_Aggregation):
    """The official ``dla_up.py`` IDAUp node: ``Sequential(conv, BN, ReLU)`` on the concatenation."""

    name, record, concat = "ida_node", IdaNodeRec, "concat"

    def layers(self, v: NodeView) -> list[Layer]:
        cin, cout = v["in_channels"], v["out_channels"]
        return [_conv("0", cin, cout, v["kernel_size"]), _bn("1", cout)]

    def module(self, v: NodeView) -> Expr:
        return Expr("ida_node", (v["in_channels"], v["out_channels"], v["kernel_size"]))

    def memory(self, v: NodeView, out: int) -> Mem:
        # Sequential(conv, BN, ReLU)(cat(xs)): the caller holds the concatenation throughout
        cat, c = v["in_channels"] * v.hw[0][0] * v.hw[0][1], out
        return Mem(cat + 2 * c, cat + c, saves_output=True)

    def call(self, v: NodeView) -> Expr:
        return Expr("self", (Expr("torch.cat", ([In(i) for i in range(len(v.inputs))], 1)),))
