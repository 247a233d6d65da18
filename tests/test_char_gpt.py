"""experiments/char_gpt.py in short: a char GPT on Debian's licence texts beats the unigram model."""
import numpy as np

from tests.test_programs import load_script

char_gpt = load_script("char_gpt")

QUICK = ["--set", "training.epochs=4", "--set", "data.limit_chars=20000", "--set", "model.context=32",
         "--set", "model.width=32", "--set", "model.depth=1", "--set", "optimizer.learning_rate=1e-2",
         "--set", "training.verbose=0", "--set", "sample.length=20"]


def test_windows_are_next_token_batches():
    batch = char_gpt.windows(np.arange(100, dtype=np.uint8), context=8, stride=4)
    assert batch["tokens"].shape == (23, 9) and batch["mask"].all()
    np.testing.assert_array_equal(batch["tokens"][1], np.arange(4, 13))


def test_unigram_bits_against_a_closed_form():
    text = np.array([0, 0, 1, 1], np.uint8)  # add-one counts: 3, 3 and 254 ones over 260
    np.testing.assert_allclose(char_gpt.unigram_bits(text, np.array([0, 1], np.uint8)), -np.log2(3 / 260))


def test_a_short_run_beats_the_unigram_model(tmp_path):
    outcome = char_gpt.main([*QUICK, "--out", str(tmp_path)])
    assert outcome["val_bits_per_char"] < outcome["unigram_bits_per_char"] - 0.5
    assert (tmp_path / "samples.txt").read_text().startswith("The ")
    bits = [row["bits_per_token"] for row in outcome["history"]]
    assert bits[-1] < bits[0]  # training loss falls
