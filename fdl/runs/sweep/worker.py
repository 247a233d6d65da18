"""A sweep worker process: trains trials of a shared study, writes no report.

    python -m fdl.runs.sweep.worker SWEEP_DIR --study NAME [--storage URL]

What `fdl sweep --workers N` starts N - 1 times beside itself (on other
machines, run `fdl sweep --resume DIR --worker` or the same config with
`--storage`). Exits 0 when the study is done, 2 with one line on stderr on error.
"""
from __future__ import annotations

import argparse
import sys

from fdl.runs.sweep.driver import run_sweep


__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fdl.runs.sweep.worker", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage")
    args = parser.parse_args(argv)
    try:
        run_sweep(resume=args.sweep_dir, storage=args.storage, study_name=args.study, report=False, verbose=0)
    except Exception as error:  # one line, like the command; the parent retries the trials
        print(f"fdl sweep worker: error: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
