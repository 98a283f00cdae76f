"""Register a head that is not built in, and use it from YAML (a head is one module).

    python examples/custom_head.py

The head is FCOS-style dense detection: on each chosen level (strides 8, 16, 32 for DLA-34), a
class branch, a box branch (distances to the four sides) and a centerness branch, each a 3x3
conv-ReLU-conv. Unlike FCOS it does not share one tower across levels: a DAG node owns one module.
The head declares what the compiler and the tools need, in one place: its spec keys (a pydantic
model), how it adds its nodes (``build``, with the IR's existing ``head_branch`` op), its rules
(``check``) and how ``dlagraph infer`` recognises it in a checkpoint (``recognise``). The
interpreter, the generated code, the diagram, the static counts and ``infer`` all pick it up.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

import dlagraph

HERE = Path(__file__).resolve().parent
TASKS = {"cls": None, "box": 4, "ctr": 1}  # branch -> channels (cls: the number of classes)


def build(b: dlagraph.heads.HeadBuilder, x: str, head: FcosHead) -> None:
    """One branch per task and level, named ``<task><level>`` (``cls3``, ``box3`` …)."""
    names = []
    for level in head.levels:
        tap = b.level_outputs[level]
        for task, channels in TASKS.items():
            rec = {"in_channels": b.channels(tap), "head_conv": head.head_conv,
                   "out_channels": channels or head.num_classes, "final_kernel": 3,
                   "heatmap": task == "cls"}  # fmt: skip
            names.append(b.add(f"{task}{level}", "head_branch", [tap], rec, spec_path="head"))
    b.add("output", "output", names, {"kind": "dict", "names": names}, spec_path="head")


def check(spec: Any, head: FcosHead) -> list:
    """Problems only the whole spec shows: levels that do not exist, or repeat."""
    n = len(spec.levels)
    problems = [(("head", "levels", i), f"level {lv} is not a tree level 2..{n - 1}")
                for i, lv in enumerate(head.levels) if not 2 <= lv < n]  # fmt: skip
    if len(set(head.levels)) != len(head.levels):
        problems.append((("head", "levels"), "levels must be unique"))
    return problems


def recognise(shapes: dict[str, tuple[int, ...]], levels: list) -> tuple[dict, dict] | None:
    """``infer``: the tensors outside the backbone are this head's when they are all
    ``cls<i>/box<i>/ctr<i>.{0,2}.{weight,bias}``."""
    found = [re.fullmatch(r"(cls|box|ctr)(\d+)\.([02])\.(weight|bias)", k) for k in shapes]
    if not shapes or not all(found):
        return None
    taps = sorted({int(m.group(2)) for m in found if m})
    first = taps[0]
    return {
        "type": "fcos",
        "num_classes": shapes[f"cls{first}.2.weight"][0],
        "levels": taps,
        "head_conv": shapes[f"cls{first}.0.weight"][0],
    }, {}


@dlagraph.register_head("fcos", build=build, check=check, recognise=recognise)
class FcosHead(dlagraph.HeadOptions):
    """FCOS-style dense detection: class, box and centerness branches on several levels."""

    type: Literal["fcos"]
    num_classes: int = Field(80, gt=0, le=10_000)
    levels: tuple[int, ...] = Field((3, 4, 5), min_length=1, description="level indices")
    head_conv: int = Field(64, gt=0, le=4096, description="hidden width of each branch")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    spec = dlagraph.load_spec(HERE / "fcos_dla34.yaml")
    s = dlagraph.summarize(spec, (256, 256))
    print(f"{spec.name}: {s.params:,} parameters, {s.macs / 1e9:.2f} GMACs at 256x256")
    torch.manual_seed(0)
    model = dlagraph.build_module(spec).eval()
    ns: dict[str, Any] = {}
    exec(compile(dlagraph.generate_source(spec), "fcos_dla34.py", "exec"), ns)  # noqa: S102
    generated = ns[ns["__all__"][0]]().eval()
    generated.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ours, theirs = model(x), generated(x)
    same = all(torch.equal(ours[k], theirs[k]) for k in ours)
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    print(f"outputs: {', '.join(f'{k} {list(v)[1:]}' for k, v in list(shapes.items())[:3])}, …")
    print(f"interpreter == generated code: {same}")
    counted = sum(p.numel() for p in model.parameters())
    print(f"static parameter count == torch's: {counted == s.params}")
    inferred = dlagraph.infer_spec(model.state_dict(), {"name": spec.name})
    print(f"inferred from the weights: head {inferred.head.type}, levels "
          f"{list(inferred.head.levels)}, {inferred.head.num_classes} classes")  # fmt: skip
    dot = dlagraph.draw(spec).source
    drawn = [k for k in shapes if re.search(rf"^\s*{k} \[label=", dot, re.M)]
    print(f"diagram: {len(drawn)} of {len(shapes)} branches drawn")
    return {"same": same, "params": s.params == counted, "inferred": inferred, "spec": spec,
            "shapes": shapes, "dot": dot}  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
