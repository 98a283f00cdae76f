"""The heads: classifier, multi-scale features, the paper's segmentation network (§4.2), and the
official ``dla_up.py`` DLASeg head. Each adds its nodes after the backbone and ends in ``output``.

IDA upsampling is eq. 1 again, now across resolutions: I(x1, …, xn) = I(N(x1, x2), x3, …, xn), with
the deeper inputs projected and upsampled (learned, bilinear-initialised transposed convs) to the
resolution of the shallowest before each 3x3 aggregation node.
"""

from __future__ import annotations

import math
from typing import Any

from ..spec import CenterNetHead, ClassifierHead, DlaUpHead, FeaturesHead, SegmentationHead
from .builder import Builder
from .ops import ClassifierRec, ConvRec, DeformConvRec, HeadBranchRec, SumNodeRec, UpsampleRec

__all__ = ["build_head"]


def build_head(b: Builder, x: str) -> None:
    """Add the spec's head after backbone output ``x``."""
    head = b.spec.head
    if isinstance(head, ClassifierHead):
        _classifier(b, x, head)
    elif isinstance(head, FeaturesHead):
        _features(b, head)
    elif isinstance(head, SegmentationHead):
        _segmentation(b, head)
    elif isinstance(head, DlaUpHead):
        _dla_up(b, head)
    elif isinstance(head, CenterNetHead):
        _centernet(b, head)
    else:
        raise TypeError(f"no head builder for {type(head).__name__}")


def _fc(b: Builder, node: str, x: str, classes: int, src: str, **kw: Any) -> str:
    """A 1x1-conv classifier; its width is the generated class's ``num_classes`` unless unused."""
    sequential, unused = (kw.pop(k, False) for k in ("sequential", "unused"))
    rec = ClassifierRec(in_channels=b.channels(x), out_channels=classes, sequential=sequential)
    syms = None if unused else {"out_channels": "num_classes"}
    return b.add(node, "classifier", [x], dict(rec), symbols=syms, unused=unused, spec_path=src)


def _classifier(b: Builder, x: str, head: ClassifierHead) -> None:
    """timm's classifier: global_pool, head_drop (a no-op at rate 0), a 1x1-conv fc, flatten."""
    c = b.channels(x)
    x = b.add("global_pool", "pool", [x], {"channels": c}, spec_path="head")
    rec = {"channels": c, "p": head.dropout}
    x = b.add("head_drop", "dropout", [x], rec, spec_path="head.dropout")
    fc = _fc(b, "fc", x, head.num_classes, "head.num_classes")
    syms = {"channels": "num_classes"}
    flat = b.add("flatten", "flatten", [fc], {"channels": head.num_classes}, symbols=syms,
                 spec_path="head")  # fmt: skip
    b.add("output", "output", [flat], {"kind": "tensor", "names": []}, spec_path="head")
    b.g.graph["classifier"] = True  # timm's model API: the head is global_pool .. flatten


def _features(b: Builder, head: FeaturesHead) -> None:
    taps = [b.level_outputs[i] for i in head.out_indices]
    b.add("output", "output", taps, {"kind": "list", "names": []}, spec_path="head.out_indices")
    keep = max(head.out_indices)
    # like timm's prune_intermediate_layers: levels after the last tap are not built at all
    drop = {n for n, m in b.g.nodes(data="meta") if m.get("level", 0) > keep + 1}
    b.g.remove_nodes_from(drop)
    b.modules[:] = [m for m in b.modules if m not in drop]
    b.level_outputs = {i: n for i, n in b.level_outputs.items() if n not in drop}


def _proj_up(b: Builder, path: str, idx: int, x: str, out_dim: int, factor: int, src: str) -> str:
    """IDAUp's per-input step: a 1x1 conv-BN-ReLU projection when the width differs, then a
    learned depthwise transposed conv, initialised as bilinear upsampling, when ``factor > 1``."""
    meta = {"spec_path": src, "eq": "eq1"}
    if b.channels(x) != out_dim:
        rec = ConvRec(in_channels=b.channels(x), out_channels=out_dim, kernel_size=1, convs=1,
                      stride=1)  # fmt: skip
        x = b.add(f"{path}.proj_{idx}", "conv", [x], dict(rec), role="P", **meta)
    if factor > 1:
        rec = UpsampleRec(channels=out_dim, factor=factor, trainable=True)
        x = b.add(f"{path}.up_{idx}", "upsample", [x], dict(rec), role="U", **meta)
    return x


def _ida_node(b: Builder, node: str, a: str, c: str, op: str, src: str, **extra: Any) -> str:
    """An IDA aggregation node N(x, layer) (eq. 1): [running x, new layer] -> 3x3 conv."""
    cin, cout = b.channels(a) + b.channels(c), b.channels(a)
    rec = {"in_channels": cin, "out_channels": cout, "kernel_size": 3, **extra}
    n = b.add(node, op, [a, c], rec, eq="eq1", role="N", arg_roles=["I", "I"], spec_path=src)
    for port, u in enumerate((a, c)):
        b.g.edges[u, n]["paper_port"] = port
    return n


def _segmentation(b: Builder, head: SegmentationHead) -> None:
    x = b.level_outputs[len(b.spec.levels) - 1]
    if head.upsample == "ida":
        # eq. 1 over Level 2 .. the last level, every input brought to Level 2's resolution
        taps = [b.level_outputs[i] for i in range(1, len(b.spec.levels))]
        width, base = head.ida_channels, b.reduction(taps[0])
        layers = [
            _proj_up(b, "ida_up", j, t, width, b.reduction(t) // base, "head.ida_channels")
            for j, t in enumerate(taps)
        ]
        x = layers[0]
        for j in range(1, len(layers)):
            node = f"ida_up.node_{j}"
            x = _ida_node(b, node, x, layers[j], "aggregate", "head.upsample", residual=False)
    x = _fc(b, "fc", x, head.num_classes, "head.num_classes")
    rec = {"channels": head.num_classes, "scale": b.reduction(x)}
    x = b.add("final_up", "interpolate", [x], rec, spec_path="head.upsample")
    b.add("output", "output", [x], {"kind": "tensor", "names": []}, spec_path="head")


def _dla_up(b: Builder, head: DlaUpHead) -> None:
    """The official DLASeg (dla_up.py): DLAUp's IDAUp stages, ``fc``, frozen ``up``, log-softmax."""
    last = len(b.spec.levels) - 1
    if head.base_classes:  # the base network keeps its ImageNet classifier, never run
        top = b.level_outputs[last]
        src = "head.base_classes"
        pool = b.add("base.avgpool", "pool", [top], {"channels": b.channels(top)}, unused=True,
                     spec_path=src)  # fmt: skip
        _fc(b, "base.fc", pool, head.base_classes, src, unused=True)
    first = int(math.log2(head.down_ratio))
    layers = [b.level_outputs[i] for i in range(first, last + 1)]
    channels = [b.channels(t) for t in layers]
    scales = [2**i for i in range(len(layers))]
    x = layers[-1]
    for i in range(len(layers) - 1):  # DLAUp.__init__ and DLAUp.forward, step by step
        j = len(layers) - i - 2
        path = f"dla_up.ida_{i}"
        ups = [s // scales[j] for s in scales[j:]]
        stage = [
            _proj_up(b, path, idx, t, channels[j], f, "head.down_ratio")
            for idx, (t, f) in enumerate(zip(layers[j:], ups, strict=True))
        ]
        x, ys = stage[0], []
        for idx in range(1, len(stage)):
            x = _ida_node(b, f"{path}.node_{idx}", x, stage[idx], "ida_node", "head.down_ratio")
            ys.append(x)
        layers[j + 1 :] = ys
        scales[j + 1 :] = [scales[j]] * (len(scales) - j - 1)
    k = head.num_classes
    logits = _fc(b, "fc", x, k, "head.num_classes", sequential=True)
    rec = UpsampleRec(channels=k, factor=head.down_ratio, trainable=False)
    syms = {"channels": "num_classes"}
    up = b.add("up", "upsample", [logits], dict(rec), symbols=syms, spec_path="head.down_ratio",
               role="U")  # fmt: skip
    probs = b.add("softmax", "log_softmax", [up], {"channels": k}, spec_path="head")
    b.add("output", "output", [probs, logits], {"kind": "tuple", "names": []}, spec_path="head")


def _ida_up_dcn(
    b: Builder, path: str, layers: list[str], startp: int, o: int, ups: list[int], dcn: bool
) -> None:
    """CenterNet's IDAUp over ``layers[startp:]`` (in place, as its forward does): for each later
    layer, ``node(up(proj(layer)) + previous)``, where proj and node are DeformConvs and up a
    bilinear-initialised depthwise transposed conv."""
    meta = {"spec_path": "head.node", "eq": "eq1"}
    for t in range(startp + 1, len(layers)):
        k = t - startp
        proj = DeformConvRec(in_channels=b.channels(layers[t]), out_channels=o, deformable=dcn)
        x = b.add(f"{path}.proj_{k}", "deform_conv", [layers[t]], dict(proj), role="P", **meta)
        up = UpsampleRec(channels=o, factor=ups[k], trainable=True)
        x = b.add(f"{path}.up_{k}", "upsample", [x], dict(up), role="U", **meta)
        node = SumNodeRec(channels=o, deformable=dcn)
        n = b.add(f"{path}.node_{k}", "sum_node", [x, layers[t - 1]], dict(node), role="N",
                  arg_roles=["I", "I"], **meta)  # fmt: skip
        for port, u in enumerate((x, layers[t - 1])):
            b.g.edges[u, n]["paper_port"] = 1 - port  # eq. 1: N(previous, new)
        layers[t] = n


def _centernet(b: Builder, head: CenterNetHead) -> None:
    """CenterNet / FairMOT's DLASeg (pose_dla_dcn.py): DLAUp, then IDAUp, then the task heads."""
    first, dcn = int(math.log2(head.down_ratio)), head.node == "dcn"
    last_level = head.last_level or len(b.spec.levels) - 1
    layers = [b.level_outputs[i] for i in range(first, len(b.spec.levels))]
    channels = [b.channels(t) for t in layers]
    scales, n = [2**i for i in range(len(layers))], len(layers)
    out = [layers[-1]]
    for i in range(n - 1):  # DLAUp.__init__ and DLAUp.forward, step by step
        j = n - i - 2
        ups = [s // scales[j] for s in scales[j:]]
        _ida_up_dcn(b, f"dla_up.ida_{i}", layers, j, channels[j], ups, dcn)
        scales[j + 1 :] = [scales[j]] * (n - j - 1)
        out.insert(0, layers[-1])
    y = out[: last_level - first]
    _ida_up_dcn(b, "ida_up", y, 0, channels[0], [2**i for i in range(len(y))], dcn)
    for name, classes in head.heads.items():
        rec = HeadBranchRec(in_channels=b.channels(y[-1]), head_conv=head.head_conv,
                            out_channels=classes, final_kernel=head.final_kernel,
                            heatmap="hm" in name)  # fmt: skip
        b.add(name, "head_branch", [y[-1]], dict(rec), spec_path=f"head.heads.{name}")
    names = list(head.heads)
    b.add("output", "output", names, {"kind": "dict", "names": names}, spec_path="head.heads")
