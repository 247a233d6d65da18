"""Every script in experiments/ runs: its `--smoke` run, as a subprocess, prints numbers that parse.

One table row per script. A script that another test file already runs end to end with
numeric asserts is listed as covered there (the test named must exist) instead of being
run twice. A new script in experiments/ without a row fails `test_every_script_has_a_row`.
The smoke runs take tiny sizes and one repeat: what they check is that each script still
runs against today's fdl and prints the table it promises (a row per variant, positive
finite rates, ratios that parse), not the figures, which are measured on a quiet machine.
"""
from __future__ import annotations

import ast
import concurrent.futures
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from tests.test_programs import load_script

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
NUMBER = r"-?\d+(?:\.\d+)?"


class Smoke(NamedTuple):
    """Run `python experiments/<name>.py --smoke *extra`, then `check(stdout)` asserts on its numbers."""

    check: Callable[[str], None]
    extra: tuple = ()


class Covered(NamedTuple):
    """Run end to end, with numeric asserts, by `test` ("tests/file.py::test_name"); `why` says how."""

    test: str
    why: str


def positive(text: str) -> float:
    value = float(text)
    assert math.isfinite(value) and value > 0, text
    return value


def fraction(text: str) -> float:
    value = float(text)
    assert 0.0 <= value <= 1.0, text
    return value


def targets(stdout: str, count: int, pattern: str) -> list[re.Match]:
    """The PASS/FAIL lines: `count` of them, each matching `pattern` after 'PASS|FAIL  '."""
    lines = [line for line in stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    found = [re.fullmatch(rf"(PASS|FAIL)\s+{pattern}", line) for line in lines]
    assert len(lines) == count and all(found), lines
    return found


# ---- the checks of the printed tables ----------------------------------------------------

ENGINE_ROW = re.compile(rf"^(?P<label>\S.*?)\s+(?P<rate>{NUMBER})\s+(?P<limit>{NUMBER})x\s\s"
                        rf"(?P<reference>\S.*?)\s+(?P<ratio>{NUMBER}x|-)\s\s(?P<target>.+)$")
ENGINE_FAMILIES = ("data in place", "hand scan", "hand jit", "fdl fit", "fdl fit objective",
                   "fdl fit per-step", "nnx jit")


def check_engine(stdout: str) -> None:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("== mnist1d-mlp:"))
    assert lines[start + 1].split()[:3] == ["variant", "steps/s", "x"], lines[start + 1]
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        row = ENGINE_ROW.match(line)
        assert row, line
        rows[row["label"]] = row
    assert tuple(rows) == ENGINE_FAMILIES
    for row in rows.values():
        positive(row["rate"]), positive(row["limit"])
    assert rows["data in place"]["limit"] == "1.00"
    assert rows["fdl fit"]["reference"] == "hand scan" and rows["fdl fit objective"]["reference"] == "fdl fit"
    assert rows["fdl fit per-step"]["reference"] == "hand jit"
    assert rows["fdl fit"]["target"] == ">= 0.95 x limit; >= 0.95 x ref"
    found = targets(stdout, 5, rf"mnist1d-mlp\s+(.+): ({NUMBER}) \(target ({NUMBER})\)")
    for match in found:
        positive(match[3])
        assert (match[1] == "PASS") == (float(match[3]) >= float(match[4])), match[0]


E2E_ROW = re.compile(rf"^(fdl|hand)\s+(cold|warm)\s+({NUMBER})\s+({NUMBER}|-)"
                     + rf"\s+({NUMBER}|-)" * 4 + rf"\s+({NUMBER})$")


def check_e2e(stdout: str) -> None:
    rows = {(m[1], m[2]): m for m in map(E2E_ROW.match, stdout.splitlines()) if m}
    assert set(rows) == {(side, phase) for side in ("fdl", "hand") for phase in ("cold", "warm")}, stdout
    for row in rows.values():
        positive(row[3]), fraction(row[9])
    for phase in ("cold", "warm"):  # the hand script reports every figure: first step, compile .. records
        assert all(value != "-" and float(value) >= 0 for value in rows["hand", phase].groups()[3:8]), \
            rows["hand", phase][0]
    ratios = re.findall(rf"^ratio fdl/hand (cold|warm): ({NUMBER})x \(target <= 1\.15x\)$", stdout, re.M)
    assert [phase for phase, _ in ratios] == ["cold", "warm"] and all(positive(r) for _, r in ratios)
    for match, (phase, ratio) in zip(targets(stdout, 2, rf"mnist1d_mlp (cold|warm): fdl/hand ({NUMBER})x "
                                                         r"\(target <= 1\.15x\)"), ratios):
        assert match[2] == phase and match[3] == ratio
        assert (match[1] == "PASS") == (float(ratio) <= 1.15)


POPULATION_VARIANTS = ("fdl population [map]", "fdl population [vmap]", "fdl population [auto]",
                       "hand vmapped scan", "hand sequential scans", "hand sequential jit steps")


def check_population(stdout: str) -> None:
    rows = {}
    for line in stdout.splitlines():
        match = re.fullmatch(rf"(\S.*?)\s+({NUMBER})\s+({NUMBER})x", line)
        if match:
            rows[match[1]] = (positive(match[2]), positive(match[3]))
    assert tuple(rows) == POPULATION_VARIANTS, stdout
    assert rows["hand vmapped scan"][1] == 1.0 or rows["hand sequential scans"][1] == 1.0
    targets(stdout, 1, rf"fdl population \[auto\] >= 0\.95 x best hand scan: ({NUMBER})")


def check_sweep(stdout: str) -> None:
    for side in ("fdl sweep", "loop of fdl train"):
        match = re.search(rf"^{side}:\s+({NUMBER}) s\s+test accuracy ({NUMBER}) ± ({NUMBER})", stdout, re.M)
        assert match, stdout
        positive(match[1]), fraction(match[2]), fraction(match[3])
    (match,) = targets(stdout, 1, rf"fdl sweep is ({NUMBER})x faster \(target >= 2\.5x\)")
    positive(match[2])


DEPTH_ROW = re.compile(r"^\s*(\d+)\s+(repeat|serial)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)$")
DEPTH_RATIO = re.compile(r"^ratio (\d+) vs (\d+) blocks: repeat (\d+\.\d+)x, serial (\d+\.\d+)x; "
                         r"at \1 blocks serial/repeat (\d+\.\d+)x$")


def check_depth(stdout: str) -> None:
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("compile time of the gradient of a block stack")
    rows = [DEPTH_ROW.match(line) for line in lines[2:-1]]
    assert all(rows), lines
    assert {(int(m[1]), m[2]) for m in rows} == {(1, "repeat"), (1, "serial"), (2, "repeat"), (2, "serial")}
    for m in rows:
        lower, compile_, total = map(positive, m.groups()[2:])
        assert abs(lower + compile_ - total) < 2e-3
    ratio = DEPTH_RATIO.match(lines[-1])
    assert ratio and (ratio[1], ratio[2]) == ("2", "1"), lines[-1]
    assert all(positive(r) for r in ratio.groups()[2:])


def check_keras_lstm(stdout: str) -> None:
    match = re.search(rf"^keras_lstm \[mnist1d\]: test accuracy ({NUMBER}), f1 ({NUMBER}), loss ({NUMBER}), "
                      rf"({NUMBER}) s$", stdout, re.M)
    assert match, stdout
    fraction(match[1]), fraction(match[2]), positive(match[3]), positive(match[4])


def check_keras_mlp(stdout: str) -> None:
    match = re.search(r"^keras_mlp \[mnist1d\]: evaluate\(test\) = (\{.*\}), (\d+\.\d) s$", stdout, re.M)
    assert match, stdout
    scores = ast.literal_eval(match[1])
    assert set(scores) == {"accuracy", "loss"}, scores
    fraction(scores["accuracy"]), positive(scores["loss"])


TABLE_PAPER = {"mnist1d_logreg": "0.32", "mnist1d_mlp": "0.68", "mnist1d_cnn": "0.94", "mnist1d_gru": "0.91"}


def check_table(stdout: str) -> None:
    lines = stdout.splitlines()
    header = lines.index("MNIST-1D, 1 seed(s) (smoke: 1 epoch)")
    rows = [re.fullmatch(rf"(\w+)\s+({NUMBER}) ± ({NUMBER})\s+({NUMBER}) s\s+({NUMBER})\s+(PASS|below)", line)
            for line in lines[header + 3:]]
    assert all(rows) and [m[1] for m in rows] == list(TABLE_PAPER), lines[header:]
    for m in rows:
        fraction(m[2]), positive(m[4])
        assert m[3] == "0.000" and m[5] == TABLE_PAPER[m[1]]  # one seed: no spread
        assert (m[6] == "PASS") == (float(m[2]) >= float(m[5]))


# ---- the table: one row per script ---------------------------------------------------------

def check_kill_resume(stdout: str) -> None:
    kills = re.search(r"kills (\d+) \(inside a checkpoint write (\d+), resumed mid-epoch (\d+)\).*compared "
                      r"(\d+) metrics lines, (\d+) arrays", stdout)
    assert kills and int(kills[1]) == 3 and int(kills[2]) == 1 and int(kills[4]) > 0 and int(kills[5]) > 0, stdout
    assert targets(stdout, 1, "identical")[0][1] == "PASS", stdout  # bit for bit after every kill


CHECKPOINT_ROW = re.compile(rf"^(every epoch|chunks|every_steps)\s+epoch\s+({NUMBER}) ms\s+(\d) save\(s\)\s+"
                            rf"cost per step \+?({NUMBER})% of a step(.*)$", re.M)


def check_checkpoint(stdout: str) -> None:
    head = re.search(rf"state ({NUMBER}) MB; (\d+) steps an epoch; baseline epoch ({NUMBER}) ms", stdout)
    assert head and positive(head[1]) and int(head[2]) == 8 and positive(head[3]), stdout
    rows = {m[1]: m for m in CHECKPOINT_ROW.finditer(stdout)}
    assert set(rows) == {"every epoch", "chunks", "every_steps"}, stdout
    assert [int(rows[name][3]) for name in ("every epoch", "chunks", "every_steps")] == [1, 0, 2]
    assert all(positive(m[2]) and math.isfinite(float(m[4])) for m in rows.values())
    assert re.fullmatch(r"\s+\(target <= 5%: (PASS|MISS)\)", rows["every epoch"][5]), stdout  # one save: the target


SCALE_ROW = re.compile(rf"^(resnet18|gpt)\s+(1 device|data 2|fsdp 2)\s+(hand|fdl)\s+(\d+)\s+({NUMBER})\s+({NUMBER})"
                       rf"\s+({NUMBER})\s+({NUMBER}x|-)$", re.M)
SCALE_LAYOUTS = ("1 device", "data 2", "fsdp 2")  # the smoke's --devices 2


def check_scale(stdout: str) -> None:
    rows = {(m[1], m[2], m[3]): m for m in SCALE_ROW.finditer(stdout)}
    assert set(rows) == {(model, layout, variant) for model in ("resnet18", "gpt") for layout in SCALE_LAYOUTS
                         for variant in ("hand", "fdl")}, stdout
    for (model, layout, variant), row in rows.items():
        positive(row[4]), positive(row[5]), positive(row[6]), positive(row[7])
        assert (row[8] == "-") == (variant == "hand"), row[0]
        # the mesh rows take the 1-device FLOPs count: the same arithmetic
        assert row[6] == rows[model, "1 device", variant][6], row[0]
    for match in targets(stdout, 6, rf"(resnet18|gpt) ({'|'.join(SCALE_LAYOUTS)}): fdl/hand ({NUMBER}) "
                                    r"\(target 0\.95\)"):
        ratio = positive(match[4])
        assert rows[match[2], match[3], "fdl"][8] == f"{match[4]}x" and (match[1] == "PASS") == (ratio >= 0.95), match[0]


OVERHEAD_ROW = re.compile(rf"^(pure|fit|train)\s+({NUMBER})\s+\+?({NUMBER})%$", re.M)


def check_overhead(stdout: str) -> None:
    rows = {m[1]: m for m in OVERHEAD_ROW.finditer(stdout)}
    assert set(rows) == {"pure", "fit", "train"} and rows["pure"][3] == "0.0", stdout
    pure = positive(rows["pure"][2])
    for match in targets(stdout, 2, rf"(fit|train): overhead \+?({NUMBER})% of the pure epoch \(target <= 10%\)"):
        share = float(match[3])
        assert abs(share - round(100 * (positive(rows[match[2]][2]) - pure) / pure, 1)) <= 0.2, match[0]
        assert (match[1] == "PASS") == (share <= 10), match[0]


SERVE_ROW = re.compile(rf"^(batching|no batching)\s+(\d+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+(\d+)"
                       rf"\s+({NUMBER})$", re.M)


def check_serve(stdout: str) -> None:
    rows = {m[1]: m for m in SERVE_ROW.finditer(stdout)}
    assert set(rows) == {"batching", "no batching"}, stdout
    for row in rows.values():
        positive(row[3]), positive(row[4]), positive(row[5]), positive(row[7])
    assert (rows["no batching"][2], rows["no batching"][6], rows["no batching"][7]) == ("1", "40", "1.00"), stdout
    assert re.search(rf"^batching / no batching: ({NUMBER})x requests/s$", stdout, re.M), stdout


GRAIN_ROW = re.compile(rf"^(NpyStream|Grain)(, process 0 of 2)?(, threads)?\s+(\d+)\s+({NUMBER})\s+({NUMBER})"
                       rf"\s+({NUMBER})\s+({NUMBER})x$", re.M)


def check_grain(stdout: str) -> None:
    rows = {m[1] + (m[2] or "") + (m[3] or ""): m for m in GRAIN_ROW.finditer(stdout)}
    grain = "grain: not installed" not in stdout
    assert set(rows) == {"NpyStream", "NpyStream, process 0 of 2"} | (
        {"Grain", "Grain, process 0 of 2", "Grain, process 0 of 2, threads"} if grain else set()), stdout
    for name, row in rows.items():
        assert int(row[4]) == (128 if "process 0 of 2" in name else 256), row[0]  # half of a 256 batch
        positive(row[5]), positive(row[6]), positive(row[7]), positive(row[8])
    assert rows["NpyStream"][8] == "1.00"
    assert bool(re.search(rf"^Grain / NpyStream, process 0 of 2: ({NUMBER})x batches/s", stdout, re.M)) == grain


SCRIPTS = {
    "autoencoders": Covered("tests/test_programs.py::test_vae_program_writes_finite_elbo_and_prior_samples",
                            "the VAE half, one epoch, finite -ELBO, reconstruction and a samples PNG"),
    "benchmark_checkpoint": Smoke(check_checkpoint),
    "benchmark_depth": Smoke(check_depth),
    "benchmark_e2e": Smoke(check_e2e),
    "benchmark_engine": Smoke(check_engine),
    "benchmark_grain": Smoke(check_grain),
    "benchmark_overhead": Smoke(check_overhead),
    "benchmark_population": Smoke(check_population),
    "benchmark_scale": Smoke(check_scale, ("--devices", "2")),
    "benchmark_serve": Smoke(check_serve),
    "benchmark_sweep": Smoke(check_sweep),
    "char_gpt": Covered("tests/test_char_gpt.py::test_a_short_run_beats_the_unigram_model",
                        "main() on a tiny corpus beats the unigram model (no --smoke flag: --set overrides)"),
    "kill_resume": Smoke(check_kill_resume),
    "gan": Covered("tests/test_gan.py::test_the_gan_script_trains_in_fdls_epoch_and_counts_its_steps",
                   "main() for two epochs: step count, finite losses, sample shapes"),
    "keras_binary_classifier": Covered("tests/test_programs.py::test_classifier_program_runs_end_to_end",
                                       "main() for one epoch, every metric in [0, 1]"),
    # roc_auc left out, as in test_programs: its score buffer recompiles evaluation per split size.
    "keras_lstm": Smoke(check_keras_lstm, ("--set", "metrics=[accuracy,f1]")),
    "keras_mlp": Smoke(check_keras_mlp),
    "mnist1d_table": Smoke(check_table),
    "program": Covered("tests/test_experiments.py::test_program_smoke_puts_its_overrides_before_the_set_ones",
                       "the scripts' shared scaffolding, not a program; run by every program script"),
    "pytorch_cnn": Covered("tests/test_programs.py::test_mnist_flag_swaps_in_the_2d_cnn_and_image_samples",
                           "main() on fake MNIST files, the 2-D CNN swapped in, accuracy in [0, 1]"),
    "pytorch_mlp": Covered("tests/test_programs.py::test_classifier_program_runs_end_to_end",
                           "main() for one epoch, accuracy in [0, 1]"),
}


def test_every_script_has_a_row():
    scripts = {path.stem for path in EXPERIMENTS.glob("*.py")}
    assert scripts - set(SCRIPTS) == set(), "add a row to SCRIPTS for each new script in experiments/"
    assert set(SCRIPTS) - scripts == set(), "remove the rows of scripts that are gone"


@pytest.mark.parametrize("name", [n for n, row in SCRIPTS.items() if isinstance(row, Covered)])
def test_a_covered_script_names_a_test_that_exists(name):
    path, test = SCRIPTS[name].test.split("::")
    text = (ROOT / path).read_text()
    assert re.search(rf"^def {test}\(", text, re.M) and f'"{name}"' in text, SCRIPTS[name].test


SMOKES = [n for n, row in SCRIPTS.items() if isinstance(row, Smoke)]
# Run on their own, after the others finish: kill_resume kills its runs at moments it measures.
ALONE = {"kill_resume"}
# Started first, so the two workers finish together: it takes as long as most others together.
LONGEST = "benchmark_scale"


def smoke_run(name: str, folder: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(EXPERIMENTS / f"{name}.py"), "--smoke", *SCRIPTS[name].extra]
    # In `folder`, so a script's default runs/ folder lands there.
    return subprocess.run(command, cwd=folder, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """The selected smoke runs but ALONE, two at a time (a run mostly compiles, on one core): name -> future."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_smoke_run_prints_numbers_that_parse"
                and item.path == request.path]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    futures = {name: pool.submit(smoke_run, name, tmp_path_factory.mktemp(name))
               for name in sorted(SMOKES, key=lambda name: name != LONGEST)
               if name in selected and name not in ALONE}
    yield futures
    for future in futures.values():
        future.cancel()
    pool.shutdown(wait=True)


@pytest.mark.parametrize("name", SMOKES)
def test_smoke_run_prints_numbers_that_parse(name, tmp_path, smoke_runs):
    if name in ALONE:
        concurrent.futures.wait(smoke_runs.values())
        done = smoke_run(name, tmp_path)
    else:
        done = smoke_runs[name].result()
    assert done.returncode == 0, done.stderr[-3000:]
    SCRIPTS[name].check(done.stdout)


def test_program_smoke_puts_its_overrides_before_the_set_ones():
    program = load_script("program")
    args = program.parse_args("a program", ["--smoke", "--set", "training.epochs=3", "--out", "somewhere"])
    assert program.config_overrides(args) == ["output.dir=somewhere", *program.SMOKE_OVERRIDES,
                                              "training.epochs=3"]
    assert program.config_overrides(program.parse_args("a program", [])) == []


def test_gan_smoke_puts_its_overrides_before_the_set_ones():
    gan = load_script("gan")
    assert gan.parse_args(["--smoke", "--set", "training.epochs=3"]).overrides == [
        *gan.SMOKE_OVERRIDES, "training.epochs=3"]


@pytest.mark.parametrize("overrides, message", [
    (["optimizer.name=sgd"], r"knows adam/adamw .* got optimizer sgd"),
    (["optimizer.b1=0.5"], r"got optimizer adamw, \['b1'\]"),
    (["optimizer.schedule.name=warmup_cosine"], r"optional cosine schedule"),
    (["data.preprocess=standardize"], r"reads the built-in mnist1d without preprocessing"),
    (["model.name=mnist1d_gru"], r"knows model.name mnist1d_mlp and mnist1d_cnn, got mnist1d_gru"),
], ids=["optimizer", "adam-keyword", "schedule", "preprocess", "model"])
def test_e2e_refuses_a_job_its_hand_written_script_does_not_do(overrides, message):
    e2e = load_script("benchmark_e2e")
    with pytest.raises(SystemExit, match=message):
        e2e.recipe(str(ROOT / "configs" / "mnist1d_mlp.yaml"), overrides)


def test_e2e_recipe_is_the_configs_job():
    recipe = load_script("benchmark_e2e").recipe(str(ROOT / "configs" / "mnist1d_cnn.yaml"),
                                                 ["training.epochs=7"])
    assert (recipe["model"], recipe["channels"], recipe["kernel_sizes"], recipe["strides"]) == (
        "cnn", 25, [5, 3, 3], 2)
    assert recipe["optimizer"] == {"name": "adamw", "learning_rate": 1e-2, "weight_decay": 1e-2,
                                   "decay_steps": 5400, "alpha": 0.0}
    assert (recipe["epochs"], recipe["batch_size"], recipe["max_shift"], recipe["monitor"]) == (
        7, 100, 3, "val_accuracy")
    assert Path(recipe["data_file"]).is_file()
