"""``dlagraph schema``: the spec's JSON Schema, for editors and validators."""

from __future__ import annotations

import argparse
import json

from ..spec import json_schema

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass  # no arguments


def run(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
