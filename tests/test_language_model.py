"""Language modelling as a task: text data, training, evaluation, generation and search on a
tiny text made here (the model is a small ``gpt``)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from evoir.backends.torch_fx import lower
from evoir.errors import EvoirError
from evoir.modelfile import load_model, save_model
from evoir.search.batches import BatchStream
from evoir.search.config import PRESERVING_OPS, TRANSFORMER_OPS, mutation_ops
from evoir.search.data import load_dataset
from evoir.search.dataset import TokenSplit
from evoir.search.evaluate import evaluate_mixture, evaluate_population
from evoir.search.generate import generate
from evoir.search.metric import ACCURACY, LOSS
from evoir.search.text import Vocabulary, load_text, vocabulary_of, with_vocabulary
from evoir.templates import TEMPLATES


def tiny_text(n_lines: int = 150, seed: int = 0) -> str:
    """Short sentences of a small grammar: learnable in a few hundred steps."""
    rng = random.Random(seed)
    who = ["the cat", "a dog", "my bird", "the fox"]
    did = ["sat on", "ran to", "saw", "ate"]
    what = ["the mat", "a log", "the sun", "my hat"]
    return "".join(f"{rng.choice(who)} {rng.choice(did)} {rng.choice(what)}.\n" for _ in range(n_lines))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text(tiny_text(), encoding="utf-8")
    return path


def small_lm(vocab: int, context: int = 16, seed: int = 0):
    return TEMPLATES["gpt"](input_shape=(context,), classes=vocab, seed=seed, width=32, depth=1, heads=2)


# ---- data ---------------------------------------------------------------------------------------


def test_vocabulary_round_trips_and_names_an_unknown_character():
    vocab = Vocabulary.of("hello world")
    assert vocab.chars == " dehlorw" and len(vocab) == 8
    ids = vocab.encode("hold")
    assert ids.dtype == torch.int64 and vocab.decode(ids) == "hold"
    with pytest.raises(EvoirError, match="the prompt has the character 'z'"):
        vocab.encode("zoo", what="the prompt")


def test_text_is_split_in_order_into_windows_and_their_next_characters(text_file):
    text = text_file.read_text()
    data = load_text(f"text:{text_file}", context=8)
    n = len(text)
    n_val = round(0.1 * n)
    assert data.metric is LOSS and data.input_shape == (8,) and data.classes == len(set(text))
    assert data.test is data.val and data.test_is_val
    vocab = data.vocab
    # Training: a window at every offset; the targets are the window one character on.
    assert isinstance(data.train, TokenSplit) and len(data.train) == (n - n_val) - 1 - 8 + 1
    x, y = data.train.take(torch.tensor([0, 5]))
    assert vocab.decode(x[1]) == text[5:13] and vocab.decode(y[1]) == text[6:14]
    # Validation: the last tenth, cut into consecutive windows, every character scored once.
    assert isinstance(data.val, TokenSplit) and len(data.val) == (n_val - 1) // 8
    x, y = data.val.take(torch.tensor([1]))
    start = n - n_val + 8
    assert vocab.decode(x[0]) == text[start : start + 8] and vocab.decode(y[0]) == text[start + 1 : start + 9]


def test_a_test_fraction_holds_out_the_end_of_the_text(text_file):
    data = load_text(f"text:{text_file}", context=8, test_fraction=0.1)
    assert not data.test_is_val and data.test is not data.val
    n = len(text_file.read_text())
    assert len(data.train.tokens) + len(data.val.tokens) + len(data.test.tokens) == n
    assert torch.equal(data.test.tokens, data.vocab.encode(text_file.read_text()[n - round(0.1 * n) :]))


def test_bad_texts_are_one_clear_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(EvoirError, match="has no text"):
        load_text(f"text:{empty}")
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(EvoirError, match="not UTF-8 text"):
        load_text(f"text:{binary}")
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 5)
    with pytest.raises(EvoirError, match="validation part has 5 characters, fewer than one window"):
        load_text(f"text:{short}", context=8)
    with pytest.raises(EvoirError, match="no such file"):
        load_text(f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(EvoirError, match=r"no tinyshakespeare data in .* put its input.txt under"):
        load_text("tinyshakespeare", tmp_path / "nothing", download=False)
    with pytest.raises(EvoirError, match="short.txt has the character 'j'"):
        load_text(f"text:{short}", context=2, vocab=Vocabulary("abcdefghij"[:9] + "z"))


def test_tinyshakespeare_is_read_from_the_data_dir(tmp_path):
    folder = tmp_path / "tinyshakespeare"
    folder.mkdir()
    (folder / "input.txt").write_text(tiny_text())
    data = load_dataset("tinyshakespeare", tmp_path, context=16, download=False)
    assert data.name == "tinyshakespeare" and data.input_shape == (16,)


def test_batches_of_text_are_seeded_and_resume_where_they_were(text_file):
    data = load_text(f"text:{text_file}", context=8)
    a = BatchStream(data, data.train, 4, seed=3)
    b = BatchStream(data, data.train, 4, seed=3)
    a.next()
    state = a.state_dict()
    expected = a.next()
    b.load_state_dict(state)
    got = b.next()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    x, y = expected
    assert x.shape == (4, 8) and x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])


# ---- evaluation and generation -----------------------------------------------------------------


def test_evaluation_is_the_mean_cross_entropy_per_character(text_file):
    data = load_text(f"text:{text_file}", context=16)
    graph, store = small_lm(data.classes)
    module = lower(graph, store)
    (ev,) = evaluate_population(module, 1, data, data.val, "cpu", batch_size=5)
    x, y = data.val.take(torch.arange(len(data.val)))
    with torch.no_grad():
        logits = module(x)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, data.classes), y.reshape(-1))
    assert ev.loss == pytest.approx(float(expected), rel=1e-5)
    assert len(ev.correct) == data.val.characters and ev.probs is None
    assert ev.score(LOSS) == -ev.loss and ev.of(ACCURACY) == ev.accuracy
    # Untrained, it is close to uniform over the vocabulary.
    assert abs(ev.loss - math.log(data.classes)) < 0.5
    # An ensemble of one is the member; of two, the loss of their mean probabilities.
    assert evaluate_mixture(module, data, data.val, "cpu").loss == pytest.approx(ev.loss, rel=1e-5)


class _Pair(torch.nn.Module):
    """Two members as one population module: a tuple of their outputs."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x), self.b(x)


def test_an_ensemble_of_language_models_averages_their_probabilities(text_file):
    data = load_text(f"text:{text_file}", context=16)
    members = [lower(*small_lm(data.classes, seed=s)) for s in (1, 2)]
    x, y = data.val.take(torch.arange(len(data.val)))
    with torch.no_grad():
        p = [torch.softmax(m(x).reshape(-1, data.classes), dim=1) for m in members]
    expected = -((p[0] + p[1]) / 2).gather(1, y.reshape(-1, 1)).log().mean()
    got = evaluate_mixture(_Pair(*members), data, data.val, "cpu", batch_size=7)
    assert got.loss == pytest.approx(float(expected), rel=1e-5)
    singles = evaluate_population(_Pair(*members), 2, data, data.val, "cpu")
    assert got.loss < max(ev.loss for ev in singles)  # the mixture is never worse than both (convexity)


def test_a_causal_model_never_sees_later_positions_which_generation_relies_on():
    graph, store = small_lm(10, context=12)
    module = lower(graph, store).eval()
    x = torch.randint(0, 10, (1, 12))
    changed = x.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % 10
    with torch.no_grad():
        a, b = module(x), module(changed)
    assert torch.equal(a[0, :7], b[0, :7]) and not torch.allclose(a[0, 7:], b[0, 7:])


def test_generation_is_seeded_and_greedy_at_temperature_zero():
    vocab = Vocabulary("abcdefghij")
    graph, store = small_lm(10, context=6)
    graph = with_vocabulary(graph, vocab)
    one = "".join(generate(graph, store, "abc", 20, seed=1))
    again = "".join(generate(graph, store, "abc", 20, seed=1))
    other = "".join(generate(graph, store, "abc", 20, seed=2))
    assert one == again and one != other and len(one) == 20 and set(one) <= set(vocab.chars)
    greedy = "".join(generate(graph, store, "abc", 10, temperature=0))
    # Greedy decoding by hand: the argmax at the last character of the last 6, the window
    # filled up with another padding than generate's (a causal model cannot see it).
    module, text = lower(graph, store).eval(), "abc"
    for _ in range(10):
        window = vocab.encode(text[-6:])
        padded = torch.cat([window, torch.full((6 - len(window),), 7)])
        with torch.no_grad():
            logits = module(padded[None])[0, len(window) - 1]
        text += vocab.chars[int(logits.argmax())]
    assert greedy == text[3:]
    top1 = "".join(generate(graph, store, "abc", 10, temperature=1.0, top_k=1, seed=5))
    assert top1 == greedy  # the one likeliest character is the greedy one


def test_generation_refuses_what_cannot_generate():
    graph, store = small_lm(10, context=6)
    with pytest.raises(EvoirError, match="has no vocabulary"):
        next(generate(graph, store, "a", 5))
    graph = with_vocabulary(graph, Vocabulary("abcdefghij"))
    with pytest.raises(EvoirError, match="character 'z'"):
        next(generate(graph, store, "az", 5))
    vit, vit_store = TEMPLATES["vit"](input_shape=(3, 8, 8), classes=10, patch=4, width=16, depth=1, heads=2)
    with pytest.raises(EvoirError, match="not a window of token ids"):
        next(generate(with_vocabulary(vit, Vocabulary("abcdefghij")), vit_store, "a", 5))


# ---- the commands --------------------------------------------------------------------------------


def test_train_eval_and_generate_from_the_command_line(evoir_cli, tmp_path, text_file):
    vocab = len(set(text_file.read_text()))
    r = evoir_cli("new", "gpt", "--vocab", str(vocab), "--context", "16", "--width", "32", "--depth", "1", "--heads", "2", "-o", "lm.json")
    assert r.code == 0, r.err
    before = json.loads(evoir_cli("eval", "lm.json", "--dataset", f"text:{text_file}", "--split", "val", "--json").out)
    r = evoir_cli("train", "lm.json", "--dataset", f"text:{text_file}", "--steps", "300", "--lr", "0.01", "--schedule", "cosine")
    assert r.code == 0, r.err
    assert "validation loss" in r.out and "nats/char" in r.out
    graph, _ = load_model(tmp_path / "lm-trained.json")
    assert vocabulary_of(graph) == Vocabulary.of(text_file.read_text())
    after = json.loads(evoir_cli("eval", "lm-trained.json", "--dataset", f"text:{text_file}", "--split", "val", "--json").out)
    assert after["loss"] < before["loss"] - 0.8  # a tiny grammar is learnt fast
    assert after["bits_per_char"] == pytest.approx(after["loss"] / math.log(2))
    r = evoir_cli("generate", "lm-trained.json", "--prompt", "the ", "-n", "40", "--seed", "3")
    assert r.code == 0 and r.out.startswith("the ") and len(r.out.rstrip("\n")) >= 44
    # The words of the grammar come out: its most common bigram is certainly there.
    assert " " in r.out[4:]
    r = evoir_cli("generate", "lm-trained.json", "--prompt", "QUEEN:")
    assert r.code == 2 and "character 'Q'" in r.err and r.out == ""
    r = evoir_cli("generate", "lm.json")
    assert r.code == 2 and "no vocabulary" in r.err


def test_a_model_that_does_not_fit_the_text_is_refused_with_the_fix(evoir_cli, text_file):
    evoir_cli("new", "gpt", "--context", "16", "-o", "lm.json")
    r = evoir_cli("train", "lm.json", "--dataset", f"text:{text_file}", "--steps", "5")
    vocab = len(set(text_file.read_text()))
    assert r.code == 2 and f"evoir new gpt --vocab {vocab} --context 16" in r.err
    evoir_cli("new", "painter-base", "-o", "cnn.json")
    r = evoir_cli("train", "cnn.json", "--dataset", f"text:{text_file}", "--steps", "5")
    assert r.code == 2 and "not a language model" in r.err
    r = evoir_cli("train", "lm.json", "--dataset", f"text:{text_file}", "--augment")
    assert r.code == 2 and "--augment" in r.err


def test_ne_on_text_compares_members_by_loss_lower_is_better(evoir_cli, tmp_path, text_file):
    r = evoir_cli(
        "search", "--dataset", f"text:{text_file}", "--context", "16",
        "-M", "3", "-K", "2", "-G", "2", "--initial-steps", "60", "--steps", "30", "--out", "run",
    )  # fmt: skip
    assert r.code == 0, r.err
    run = tmp_path / "run"
    assert "val loss" in r.out and "test loss (nats/char)" in r.out
    for name in ("val_loss.png", "loss_vs_flops.png", "lineage.png", "best.json", "events.jsonl"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["input_shape"] == [16] and config["vocab"] == Vocabulary.of(text_file.read_text()).chars
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert all("val_loss" in e and "val_acc" not in e for e in events)
    for h in history:  # the best member of a generation is the one with the lowest loss
        members = [e["val_loss"] for e in events if e["generation"] == h["generation"]]
        assert h["best_val_loss"] == min(members)
    results = json.loads((run / "results.json").read_text())
    assert results["best"]["val_loss"] == min(e["val_loss"] for e in events)
    assert {"test_loss", "val_loss"} <= set(results["best"]) and "hierarchical" not in results
    assert results["ensemble"]["test_loss"] > 0
    # Every mutation is a transformer pass.
    passes = {p.split("{")[0] for e in events for p in e["passes"]}
    assert passes and passes <= set(TRANSFORMER_OPS)
    summary = (run / "summary.md").read_text()
    assert "test loss (nats/char)" in summary and "no test part of its own" in summary
    graph, _ = load_model(run / "best.json")
    assert vocabulary_of(graph) is not None and graph.metadata["champion"]["val_loss"] == results["best"]["val_loss"]
    r = evoir_cli("generate", str(run / "best.json"), "--prompt", "a", "-n", "10")
    assert r.code == 0 and len(r.out.strip()) == 11


def test_mutations_follow_the_network():
    gpt, _ = small_lm(10)
    cnn, _ = TEMPLATES["painter-base"](input_shape=(3, 16, 16), classes=10)
    assert mutation_ops(gpt) == TRANSFORMER_OPS and mutation_ops(cnn) == PRESERVING_OPS


def test_a_saved_language_model_keeps_its_vocabulary(tmp_path):
    graph, store = small_lm(5)
    graph = with_vocabulary(graph, Vocabulary("abcde"))
    save_model(tmp_path / "m.json", graph, store)
    loaded, _ = load_model(tmp_path / "m.json")
    assert vocabulary_of(loaded) == Vocabulary("abcde")


def test_a_growth_run_on_text_goes_on_with_its_batches_and_schedule(text_file):
    from evoir.passes.add_heads import AddHeads
    from evoir.search.config import SearchConfig
    from evoir.search.growth import GrowthRun

    data = load_text(f"text:{text_file}", context=8)
    config = SearchConfig(
        dataset=f"text:{text_file}", context=8, batch_size=4, optimizer="adamw", schedule="cosine", device="cpu"
    )
    run = GrowthRun(*small_lm(data.classes, context=8), data, config, train_probe=16, val_probe=4)
    run.train(10, 5, total=30)
    twin = run.fork()  # the same batches from here on
    run.train(10, 5, total=30)
    twin.train(10, 5, total=30)
    assert run.curve.val_loss == twin.curve.val_loss and len(run.curve.val_loss) == 5
    assert run.curve.steps == [0, 5, 10, 15, 20]
    # A preserving growth measures as the network did before it.
    grown = run.fork()
    before = grown.curve.val_loss[-1]
    grown.grow([AddHeads(at="b0.attn", heads=2)])
    grown.record()
    assert grown.curve.val_loss[-1] == pytest.approx(before, abs=1e-5) and len(grown.curve.steps) == 5
    assert grown.final().loss == pytest.approx(run.final().loss, abs=1e-5)
    # The schedule spans the whole budget: at its end the learning rate has come down to 0.
    assert run.trainer.settings.schedule.factor(29, 30) < 0.01 < run.trainer.lr_factor


def test_a_vit_searches_images_with_the_transformer_passes(evoir_cli, tmp_path):
    evoir_cli("new", "vit", "--input", "3,16,16", "--patch", "4", "--width", "16", "--depth", "1", "--heads", "2", "-o", "vit.json")
    r = evoir_cli(
        "search", "--dataset", "synthetic", "--start", "vit.json",
        "-M", "3", "-K", "2", "-G", "1", "--initial-steps", "20", "--steps", "10", "--out", "run",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "test accuracy" in r.out and (tmp_path / "run" / "val_accuracy.png").exists()
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    passes = {p.split("{")[0] for e in events for p in e["passes"]}
    assert passes and passes <= set(TRANSFORMER_OPS) and all("val_acc" in e for e in events)
