"""``dlagraph export``: a spec, preset or checkpoint as ONNX, OpenVINO IR, a torch.export
program or TorchScript, checked in its runtime against PyTorch. torch is imported when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..base.errors import SpecError
from ..base.io import is_checkpoint_file
from ..deploy.registry import MAX_DROP, get_format, registered_formats
from ..spec import load_spec
from ..spec.overrides import apply_overrides, parse_sets
from .common import DEFAULT_OUTPUT, budget, image_count, positive, steps_on_a_terminal

__all__ = ["add_arguments", "run"]


def _batch(text: str) -> int | str:
    if text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number or dynamic (got {text!r})") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be 1 to 4096 or dynamic (got {value})")
    return value


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import export

    if args.size is not None and len(args.size) > 2:
        raise SpecError(f"--size takes one side or H W, not {len(args.size)} numbers")
    size = None if args.size is None else (args.size[0], args.size[-1])
    source, weights = args.model, args.weights
    if is_checkpoint_file(source):
        if weights is not None:
            raise SpecError("give a checkpoint, or a spec with --weights, not both")
        from ..inspect.infer import infer_checkpoint

        # the assumptions' hints (--set aggregation.residual=true) work here as in infer
        found = infer_checkpoint(source, parse_sets(args.set or []))
        for note in found.assumptions:
            print(f"assumed (from the checkpoint) {note}")
        source, weights = found.spec, args.model
    elif args.set:  # applied to the spec's data, then validated as a whole (as build does)
        source = load_spec(apply_overrides(load_spec(source).to_dict(), parse_sets(args.set)))
    if args.validation is None and (args.max_drop, args.validation_images) != (None, None):
        given = "--max-drop" if args.max_drop is not None else "--validation-images"
        raise SpecError(f"{given} is for --validation (the labelled images int8 is measured on)")
    if args.validation is not None and args.precision != "int8":
        raise SpecError(f"--validation measures int8 (the precision is {args.precision})")
    out = Path(args.output or Path(DEFAULT_OUTPUT) / "export")
    result = export(
        source,
        args.format,
        out,
        precision=args.precision,
        calibration=args.calibration,
        size=size,
        batch=args.batch,
        weights=weights,
        calibration_images=args.calibration_images,
        name=args.name,
        force=args.force,
        progress=steps_on_a_terminal(),
        validation=args.validation,
        max_drop=MAX_DROP if args.max_drop is None else args.max_drop,
        validation_images=args.validation_images or 256,
    )
    print(result)
    if result.metadata.get("load"):
        print(f"to load it: {result.metadata['load']}")
    for p in result.files:
        print(f"wrote {p}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="a spec file, a preset name, or a checkpoint (.pth, .pt, .safetensors; one that "
        "carries its spec, as the examples' last.pt, is read as that spec)",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=registered_formats(),
        help="; ".join(
            f"{n}: {get_format(n).help or get_format(n).runtime}" for n in registered_formats()
        ),
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "int8"),
        help="fp32 (default); bf16 for pt2 and torchscript; int8 for onnx, openvino and pt2",
    )
    p.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="int8 calibration images: digits, folder:PATH or random (a timing run only)",
    )
    p.add_argument(
        "--calibration-images",
        type=image_count,
        default=256,
        metavar="N",
        help="calibration images (default 256)",
    )
    p.add_argument(
        "--validation",
        metavar="SOURCE",
        help="int8: labelled images to measure what int8 costs (top-1): digits, or folder:PATH "
        "with one folder of images per class (torchvision's ImageFolder: classes in name order). "
        "OpenVINO keeps the costliest layers in floating point until within --max-drop; an "
        "artifact over it is not written",
    )
    p.add_argument(
        "--validation-images",
        type=image_count,
        metavar="N",
        help="validation images (default 256; from each class in turn)",
    )
    p.add_argument(
        "--max-drop",
        type=budget,
        metavar="X",
        help=f"with --validation: the top-1 int8 may lose, a fraction from 0 to 1 (default "
        f"{MAX_DROP:g}: half a point)",
    )
    p.add_argument("--weights", metavar="FILE", help="a checkpoint for the spec's weights")
    p.add_argument(
        "--size",
        type=positive,
        nargs="+",
        metavar="S",
        help="input side or H W (default: the spec's input_size, else 224)",
    )
    p.add_argument(
        "--batch", type=_batch, default=1, metavar="N", help="batch size, or dynamic (default 1)"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="set a spec field (of the spec, or of the checkpoint's inferred one) by its dotted "
        "path, VALUE read as YAML (repeatable)",
    )
    p.add_argument("--name", help="file name stem (default: the spec's name)")
    p.add_argument(
        "-o", "--output", metavar="DIR", help=f"output folder (default: {DEFAULT_OUTPUT}/export/)"
    )
    p.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
