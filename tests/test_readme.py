"""README.md's Python blocks run as written (with fewer epochs) and its commands are the CI's.

This is the one place that runs the README's Python; the docstrings' examples run in test_docs.py.
"""
import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# A run directory as `fdl train configs/NAME.yaml` names it: runs/NAME-YYYYMMDD-HHMMSS.
RUN_DIR = re.compile(r"runs/([\w.]+?)-(\d{8}-\d{6})")


def python_blocks() -> list[tuple[int, str]]:
    """(README line of the block's first line, code) for every ```python block, in order."""
    return [(README.count("\n", 0, match.start(1)) + 1, match.group(1))
            for match in PYTHON_BLOCK.finditer(README)]


def _write_the_run_dirs_named_in(code: str) -> None:
    """The run directories the README's shell steps leave behind (`fdl train configs/NAME.yaml`).

    The blocks only read a run directory back, whatever its model, so one epoch of the
    cheapest config (logistic regression) stands in for each, without plots or event files.
    """
    import fdl.runs

    for name, stamp in sorted(set(RUN_DIR.findall(code))):
        overrides = ["training.epochs=1", f"output.dir=runs/{name}-{stamp}", "output.plots=false",
                     "output.tensorboard=false"]
        fdl.runs.train_from_config(fdl.config.load_config("configs/mnist1d_logreg.yaml", overrides))


def test_the_readme_python_runs_top_to_bottom(tmp_path, monkeypatch):
    """Every block, in order, in one namespace (a reader's session), run in a scratch folder."""
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert blocks, "README.md has no ```python block"
    _write_the_run_dirs_named_in("".join(code for _, code in blocks))
    import fdl

    # `x_raw` in the README stands for the reader's own inputs: raw MNIST-1D rows here.
    namespace = {"x_raw": np.asarray(fdl.data.load("mnist1d").test.x[:8])}
    after = []  # the namespace after each block
    for line, code in blocks:
        code = code.replace("epochs=20", "epochs=2")
        # Leading newlines make tracebacks point at README.md's own line numbers.
        exec(compile("\n" * (line - 1) + code, str(README_PATH), "exec"), namespace)
        after.append(dict(namespace))
    main = after[0]  # the main example: trains, evaluates and predicts on the test split
    assert 0.2 < main["scores"]["accuracy"] <= 1 and main["logits"].shape == (1000, 10)


def test_ci_runs_the_readme_test_command():
    test_command = re.findall(r"^python3 -m venv .*pip install -e \"\.\[test\]\" && (.*)$", README, re.M)[0]
    assert test_command in (ROOT / ".ci" / "run").read_text()
