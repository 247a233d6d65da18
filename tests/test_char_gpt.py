"""The char GPT: configs/char_gpt.yaml through `fdl train`, its config errors, and experiments/char_gpt.py."""
import math
from pathlib import Path

import numpy as np
import pytest

import fdl
from fdl.cli.main import main
from fdl.config import ConfigError, build_arguments, load_config
from fdl.records import RunDir
from fdl.runs.samples import sample_text
from tests.test_programs import load_script

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "char_gpt.yaml"
PARAGRAPH = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
             "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season "
             "of Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair.\n")
COPIES = 12  # 12 * 287 = 3444 bytes
# Compiling dominates (an epoch is ~0.1 s): the script's test below builds the same programs, which
# it loads from the session's compilation cache.
TINY = ["data.args.context=16", "data.args.stride=4", "model.args.width=16", "model.args.depth=1",
        "model.args.heads=2", "training.epochs=8", "training.batch_size=32", "training.verbose=0",
        "optimizer.learning_rate=1e-2", "output.tensorboard=false", "output.plots=false", "sample.length=40"]

char_gpt = load_script("char_gpt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "dickens.txt"
    path.write_text(PARAGRAPH * COPIES)
    return path


def tiny(corpus: Path) -> list[str]:
    return [*TINY, f"data.path={corpus}"]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> RunDir:
    """`fdl train configs/char_gpt.yaml` on 3.4 KB, context 16, width 16, depth 1, 8 epochs of 21 steps."""
    run_dir = tmp_path_factory.mktemp("runs") / "char_gpt"
    sets = [part for override in tiny(corpus) for part in ("--set", override)]
    assert main(["train", str(CONFIG), "--out", str(run_dir), *sets]) == 0
    return RunDir(run_dir)


def test_fdl_train_reports_bits_per_character_of_val_and_test(trained):
    summary = trained.summary()
    # 3444 bytes: val and test floor(0.1 * 3444) = 344 each, train 2756 -> (2756 - 17) // 4 + 1 = 685
    # windows, 685 // 32 = 21 steps per epoch.
    assert (summary["epochs"], summary["steps"]) == (8, 8 * 21)
    run = fdl.load_run(trained.path, "last")  # the final state, read back
    for split in ("val", "test"):
        bits = summary[split]["bits_per_token"]
        assert math.isfinite(bits) and bits < 8, summary  # 8 = log2(256): uniform bytes
        assert bits == pytest.approx(summary[split]["loss"] / math.log(2), rel=1e-6)  # nats -> bits
    assert run.evaluate("val")["bits_per_token"] == pytest.approx(summary["val"]["bits_per_token"], rel=1e-6)
    # samples.txt holds what the trained model generates from the config's prompt (seeded).
    text = trained.samples_path.read_text(encoding="utf-8")
    assert text.startswith("The ") and text == sample_text(run.arguments, run.state) + "\n"


@pytest.mark.parametrize("overrides, message", [
    (["objective=null"], r"^objective: data 'text' gives examples \{tokens, mask\}, not \(x, y\) — add objective: "
                         r"\{name: masked_sequence_cross_entropy\}"),
    (["metrics=[accuracy]"], r"^metrics: accuracy need \(x, y\) data, but data 'text' gives \{tokens, mask\} — use "
                             r"metrics: \[\]"),
], ids=["no-objective", "metrics"])
def test_dict_data_needs_an_objective_and_no_metrics(corpus, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_arguments(load_config(CONFIG, [*tiny(corpus), *overrides]))


@pytest.mark.parametrize("overrides, message", [
    (["data.name=mnist1d"], r"^sample: needs byte tokens \(data.name: text\), but data.name is 'mnist1d' — remove"),
    (["sample.prompt=''"], r"^sample.prompt: empty — give the text to continue"),
    (["sample.length=0"], r"^sample.length: must be >= 1, got 0$"),
    (["sample.temperature=-1"], r"^sample.temperature: must be >= 0 \(0: greedy\), got -1"),
], ids=["data", "prompt", "length", "temperature"])
def test_bad_sample_sections_fail_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, overrides)


# --- experiments/char_gpt.py: `fdl train` of the config plus the unigram baseline ------------------

def test_unigram_bits_against_a_closed_form():
    text = np.array([0, 0, 1, 1], np.uint8)  # add-one counts: 3, 3 and 254 ones over 260
    np.testing.assert_allclose(char_gpt.unigram_bits(text, np.array([0, 1], np.uint8)), -np.log2(3 / 260))


def test_a_short_run_beats_the_unigram_model(corpus, tmp_path):
    outcome = char_gpt.main([*[part for override in tiny(corpus) for part in ("--set", override)],
                             "--out", str(tmp_path / "run")])
    assert outcome["val_bits_per_char"] < outcome["unigram_bits_per_char"] - 0.5
    assert math.isfinite(outcome["test_bits_per_char"])
    assert outcome["run_dir"].samples_path.read_text().startswith("The ")
    bits = [row["bits_per_token"] for row in outcome["history"]]
    assert bits[-1] < bits[0]  # training loss falls
