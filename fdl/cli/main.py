"""Entry point of the `fdl` console script."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdl", description="fdl: functional deep learning on JAX.",
        epilog="The train/eval/predict/sweep commands are not built yet; use the library "
               "(import fdl) or the scripts in experiments/.")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    build_parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
