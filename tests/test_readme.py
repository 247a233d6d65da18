"""README.md's Python example runs as written (with fewer epochs) and its commands are the CI's."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_example_trains_and_evaluates():
    example = re.findall(r"```python\n(.*?)```", README, re.S)[0].replace("epochs=20", "epochs=2")
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert 0.2 < namespace["scores"]["accuracy"] <= 1 and namespace["logits"].shape == (1000, 10)


def test_ci_runs_the_readme_test_command():
    test_command = re.findall(r"^python3 -m venv .*pip install -e \"\.\[test\]\" && (.*)$", README, re.M)[0]
    assert test_command in (ROOT / ".ci" / "run").read_text()
