"""Smoke test of experiments/benchmark_depth.py: `--help` and `--quick` run, and the printed table parses."""
import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmark_depth.py"
ROW = re.compile(r"^\s*(\d+)\s+(repeat|serial)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)$")
RATIO = re.compile(r"^ratio (\d+) vs (\d+) blocks: repeat (\d+\.\d+)x, serial (\d+\.\d+)x; "
                   r"at \1 blocks serial/repeat (\d+\.\d+)x$")


def run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=True).stdout


def test_help_names_the_options():
    text = run("--help")
    for option in ("--depths", "--quick", "--program", "--repeats"):
        assert option in text


def test_quick_run_prints_a_row_per_depth_and_stack_and_the_ratios():
    lines = run("--quick").strip().splitlines()
    assert lines[0].startswith("compile time of the gradient of a block stack")
    rows = [ROW.match(line) for line in lines[2:-1]]
    assert all(rows), lines
    seen = {(int(m[1]), m[2]) for m in rows}
    assert seen == {(1, "repeat"), (1, "serial"), (2, "repeat"), (2, "serial")}
    for m in rows:
        lower, compile_, total = map(float, m.groups()[2:])
        assert lower > 0 and compile_ > 0 and abs(lower + compile_ - total) < 2e-3
    ratio = RATIO.match(lines[-1])
    assert ratio and (ratio[1], ratio[2]) == ("2", "1"), lines[-1]
    assert all(float(r) > 0 for r in ratio.groups()[2:])
