"""The heads: classifier, multi-scale features, the paper's segmentation network (§4.2), and the
official ``dla_up.py`` DLASeg head. Each adds its nodes after the backbone and ends in ``output``.

IDA upsampling is eq. 1 again, now across resolutions: I(x1, …, xn) = I(N(x1, x2), x3, …, xn), with
the deeper inputs projected and upsampled (learned, bilinear-initialised transposed convs) to the
resolution of the shallowest before each 3x3 aggregation node.
"""

from __future__ import annotations

import math
from typing import Any

from .spec import ClassifierHead, DlaUpHead, FeaturesHead, SegmentationHead

__all__ = ["build_head"]


def build_head(b: Any, x: str) -> None:
    """Add the spec's head after backbone output ``x`` and set ``graph['output_kind']``."""
    head = b.spec.head
    if isinstance(head, ClassifierHead):
        _classifier(b, x, head)
    elif isinstance(head, FeaturesHead):
        _features(b, head)
    elif isinstance(head, SegmentationHead):
        _segmentation(b, x, head)
    else:
        assert isinstance(head, DlaUpHead)
        _dla_up(b, head)


def _classifier(b: Any, x: str, head: ClassifierHead) -> None:
    c = b.out(x)
    common = {"in_channels": c, "reduction": b.red(x)}
    x = b.add("global_pool", "pool", [x], out_channels=c, spec_path="head", **common)
    if head.dropout > 0:
        x = b.add(
            "head_drop",
            "dropout",
            [x],
            out_channels=c,
            p=head.dropout,
            spec_path="head.dropout",
            **common,
        )
    x = b.add(
        "fc",
        "classifier",
        [x],
        out_channels=head.num_classes,
        flatten=True,
        num_classes_arg=True,
        spec_path="head.num_classes",
        **common,
    )
    b.add(
        "output", "output", [x], out_channels=head.num_classes, reduction=b.red(x), spec_path="head"
    )
    b.g.graph["output_kind"] = "tensor"


def _features(b: Any, head: FeaturesHead) -> None:
    from .compile import level_output

    taps = [level_output(b, i) for i in head.out_indices]
    b.add(
        "output",
        "output",
        taps,
        out_channels=sum(b.out(t) for t in taps),
        reduction=b.red(taps[-1]),
        spec_path="head.out_indices",
    )
    b.g.graph["output_kind"] = "list"
    keep = max(head.out_indices)
    if keep < len(b.spec.levels) - 1:  # like timm's prune_intermediate_layers
        drop = {n for n in b.g.nodes if n.startswith("level") and int(n.split(".")[0][5:]) > keep}
        b.g.remove_nodes_from(drop)
        b.modules[:] = [m for m in b.modules if m not in drop]


def _proj_up(b: Any, path: str, idx: int, x: str, out_dim: int, factor: int, spec_path: str) -> str:
    """IDAUp's per-input step: a 1x1 conv-BN-ReLU projection when the width differs, then a
    learned depthwise transposed conv, initialised as bilinear upsampling, when ``factor > 1``."""
    if b.out(x) != out_dim:
        x = b.add(
            f"{path}.proj_{idx}",
            "conv",
            [x],
            in_channels=b.out(x),
            out_channels=out_dim,
            kernel_size=1,
            convs=1,
            stride=1,
            reduction=b.red(x),
            spec_path=spec_path,
            role="P",
            eq="eq1",
        )
    if factor > 1:
        x = b.add(
            f"{path}.up_{idx}",
            "upsample",
            [x],
            in_channels=out_dim,
            out_channels=out_dim,
            factor=factor,
            trainable=True,
            reduction=b.red(x) // factor,
            spec_path=spec_path,
            role="U",
            eq="eq1",
        )
    return x


def _ida_node(
    b: Any, node: str, a: str, c: str, kernel: int, spec_path: str, sequential: bool
) -> str:
    """An IDA aggregation node N(x, layer) (eq. 1): concat [running x, new layer] -> conv."""
    n = b.add(
        node,
        "aggregate",
        [a, c],
        in_channels=b.out(a) + b.out(c),
        out_channels=b.out(a),
        kernel_size=kernel,
        residual=False,
        reduction=b.red(a),
        eq="eq1",
        role="N",
        arg_roles=["I", "I"],
        sequential=sequential,
        spec_path=spec_path,
    )
    for port, u in enumerate((a, c)):
        b.g.edges[u, n]["paper_port"] = port
    return n


def _segmentation(b: Any, x: str, head: SegmentationHead) -> None:
    from .compile import level_output

    k = head.num_classes
    if head.upsample == "ida":
        # eq. 1 over Level 2 .. the last level, every input brought to Level 2's resolution
        taps = [level_output(b, i) for i in range(1, len(b.spec.levels))]
        base = b.red(taps[0])
        layers = [
            _proj_up(b, "ida_up", j, t, head.ida_channels, b.red(t) // base, "head.ida_channels")
            for j, t in enumerate(taps)
        ]
        x = layers[0]
        for j in range(1, len(layers)):
            x = _ida_node(b, f"ida_up.node_{j}", x, layers[j], 3, "head.upsample", False)
    c = b.out(x)
    x = b.add(
        "fc",
        "classifier",
        [x],
        in_channels=c,
        out_channels=k,
        flatten=False,
        num_classes_arg=True,
        reduction=b.red(x),
        spec_path="head.num_classes",
    )
    scale = b.red(x)
    x = b.add(
        "final_up",
        "interpolate",
        [x],
        in_channels=k,
        out_channels=k,
        scale=scale,
        reduction=1,
        spec_path="head.upsample",
    )
    b.add("output", "output", [x], out_channels=k, reduction=1, spec_path="head")
    b.g.graph["output_kind"] = "tensor"


def _dla_up(b: Any, head: DlaUpHead) -> None:
    """The official DLASeg (dla_up.py): DLAUp's IDAUp stages, ``fc``, frozen ``up``, log-softmax."""
    from .compile import level_output

    last = len(b.spec.levels) - 1
    if head.base_classes:  # the base network keeps its ImageNet classifier, never run
        c = b.out(level_output(b, last))
        red = b.red(level_output(b, last))
        pool = b.add(
            "base.avgpool",
            "pool",
            [level_output(b, last)],
            in_channels=c,
            out_channels=c,
            reduction=red,
            unused=True,
            spec_path="head.base_classes",
        )
        b.add(
            "base.fc",
            "classifier",
            [pool],
            in_channels=c,
            out_channels=head.base_classes,
            flatten=False,
            reduction=red,
            unused=True,
            spec_path="head.base_classes",
        )
    first = int(math.log2(head.down_ratio))
    layers = [level_output(b, i) for i in range(first, last + 1)]
    channels = [b.out(t) for t in layers]
    in_channels = list(channels)
    scales = [2**i for i in range(len(layers))]
    x = layers[-1]
    for i in range(len(layers) - 1):  # DLAUp.__init__ and DLAUp.forward, step by step
        j = len(layers) - i - 2
        path = f"dla_up.ida_{i}"
        ups = [s // scales[j] for s in scales[j:]]
        assert in_channels[j:] == [b.out(t) for t in layers[j:]]
        stage = [
            _proj_up(b, path, idx, t, channels[j], f, "head.down_ratio")
            for idx, (t, f) in enumerate(zip(layers[j:], ups, strict=True))
        ]
        x, ys = stage[0], []
        for idx in range(1, len(stage)):
            x = _ida_node(b, f"{path}.node_{idx}", x, stage[idx], 3, "head.down_ratio", True)
            ys.append(x)
        layers[j + 1 :] = ys
        scales[j + 1 :] = [scales[j]] * (len(scales) - j - 1)
        in_channels[j + 1 :] = [channels[j]] * (len(in_channels) - j - 1)
    k = head.num_classes
    x = b.add(
        "fc",
        "classifier",
        [x],
        in_channels=b.out(x),
        out_channels=k,
        flatten=False,
        sequential=True,
        num_classes_arg=True,
        reduction=b.red(x),
        spec_path="head.num_classes",
    )
    logits = x
    up = b.add(
        "up",
        "upsample",
        [x],
        in_channels=k,
        out_channels=k,
        factor=head.down_ratio,
        trainable=False,
        num_classes_arg=True,
        reduction=1,
        spec_path="head.down_ratio",
        role="U",
    )
    probs = b.add(
        "softmax", "log_softmax", [up], in_channels=k, out_channels=k, reduction=1, spec_path="head"
    )
    b.add("output", "output", [probs, logits], out_channels=2 * k, reduction=1, spec_path="head")
    b.g.graph["output_kind"] = "tuple"
