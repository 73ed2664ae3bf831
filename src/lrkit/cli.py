"""The ``lrkit`` command line."""

from __future__ import annotations

import argparse

import lrkit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lrkit {lrkit.__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0
