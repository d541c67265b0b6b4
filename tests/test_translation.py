"""Translation: the corpus parsers on real and bad input, the split, the metrics, decoding, a run."""

from __future__ import annotations

import gzip
from dataclasses import replace

import pytest
import sacrebleu
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.runner import RunConfig, ensure_baselines
from bench.store import ResultsStore
from tasks import TASKS, ModelConfig
from tasks.data import DataError
from tasks.translation.corpus import _words as words
from tasks.translation.corpus import entries_to_add, find_ding, parse_ding, parse_tsv, split_of, split_pairs
from tasks.translation.data import BATCH_TOKENS_PER_PAIR, TranslationData
from tasks.translation.decoding import LENGTH_EXPONENTS, beam_candidates, beam_search, greedy, rank
from tasks.translation.metrics import SacreBLEUStat
from tasks.translation.model import Seq2Seq, TiedOutput
from tasks.translation.tokens import BOS, EOS, PAD

runner = CliRunner()


def smoke_args(out, data_dir) -> list[str]:
    """`rnnbench run` of the attention task's smoke budget with rnn_fused, into `out`."""
    return ["run", "--task", "translation-de-en-attention", "--cell", "rnn_fused", "--budget", "smoke",
            "--out", str(out), "--data-dir", str(data_dir)]


@pytest.fixture(scope="module")
def ding(shared_data):
    return parse_ding(find_ding(shared_data))


def test_ding_sentence_pairs(ding):
    assert 19_000 < len(ding.pairs) < 21_000
    assert len(set(ding.pairs)) == len(ding.pairs)
    for de, en in ding.pairs:
        assert de.endswith((".", "!", "?")) and en.endswith((".", "!", "?"))
        assert not any(c in de + en for c in "{}[]"), (de, en)
        assert de == de.strip() and "  " not in de
    assert ("Sie fühlt sich gekränkt.", "She feels hurt.") in ding.pairs
    assert ding.counts["duplicate pairs dropped"] > 0
    assert ding.counts["alternatives that are not sentence pairs"] > 100_000


def test_ding_parser_on_real_lines(tmp_path, shared_data):
    wanted = ("Abänderung {f}", "Noch ist nicht aller Tage Abend.")
    with gzip.open(shared_data / "translation" / "ding-de-en.txt.gz", "rt", encoding="utf-8") as lines:
        picked = [line for line in lines if line.startswith(wanted)][:2]
    path = tmp_path / "two.txt"
    path.write_text("# header :: line\n" + "".join(picked), encoding="utf-8")
    corpus = parse_ding(path)
    assert corpus.pairs == [
        ("Ich habe am ursprünglichen Entwurf ein paar Änderungen vorgenommen.",
         "I’ve made one or two modifications to the original design."),
        ("Noch ist nicht aller Tage Abend.", "It’s not over until it’s over."),
    ]
    assert corpus.counts["alternatives that are not sentence pairs"] == 2
    # those two are the dictionary entries a task may train on, annotations and notes removed
    assert corpus.entries == [("Abänderung", "modification"), ("Abänderungen", "modifications")]


def test_dictionary_entries_added_to_training_are_known_words_and_never_held_out(ding):
    splits = split_pairs(ding)
    chosen = entries_to_add(ding, splits, 5_000)
    assert len(chosen) == 5_000 and len(set(chosen)) == 5_000
    known = {w for source, _ in splits["train"] for w in words(source)}
    held_out = {" ".join(words(source)) for name in ("val", "test") for source, _ in splits[name]}
    assert all(set(words(de)) <= known and " ".join(words(de)) not in held_out for de, _ in chosen)
    assert not any(c in de + en for de, en in chosen for c in "{}[]()")
    # a held-out source given as an entry (without its full stop) is never trained on
    source = splits["test"][0][0]
    leaky = replace(ding, entries=[(source.rstrip(".!?"), "leak")] + ding.entries[:1000])
    assert (source.rstrip(".!?"), "leak") not in entries_to_add(leaky, splits, 10_000)
    # the choice does not depend on the file's order, and a smaller limit takes a prefix
    shuffled = replace(ding, entries=ding.entries[::-1])
    assert entries_to_add(shuffled, splits, 5_000) == chosen
    assert entries_to_add(ding, splits, 100) == chosen[:100]


def test_training_batches_add_the_entries_by_tokens_and_keep_the_sentences_batches(ding, tmp_path):
    torch.manual_seed(5)
    plain = TranslationData(lambda: ding, batch_size=32, vocab_size=400, run_dir=tmp_path)
    plain.prepare_data()
    plain.setup("fit")
    assert plain.entries == [] and "dictionary entries trained on" not in plain.corpus.summary()
    data = TranslationData(lambda: ding, batch_size=32, vocab_size=400, run_dir=tmp_path, dictionary_entries=3_000)
    data.setup("fit")
    assert len(data.entries) > 2_900 and data.corpus.summary()["dictionary entries trained on"] == len(data.entries)
    train = data.batches("train")
    # every sentence and entry once an epoch; the sentences' batches are those of a run without entries
    assert sorted(p for batch in train for _, _, p in batch) == sorted(p for _, _, p in data.splits["train"] + data.entries)
    sentences = plain.batches("train")
    assert train[: len(sentences)] == sentences and all(len(b) == 32 for b in sentences[:49])
    entries = {p for _, _, p in data.entries}
    assert all(p in entries for batch in train[len(sentences):] for _, _, p in batch)
    assert not entries & {p for batch in data.batches("val") + data.batches("test") for _, _, p in batch}
    cap = 32 * BATCH_TOKENS_PER_PAIR
    for batch in train[len(sentences):]:
        longest = max(len(s) + len(t) for s, t, _ in batch)
        assert len(batch) <= 32 or len(batch) * longest <= cap
    assert max(len(b) for b in train[len(sentences):]) > 32  # short entries come in larger batches
    assert all(len(b) == 32 for b in data.batches("val")[:-1])


def test_split_is_by_source_and_cannot_leak(ding):
    splits = split_pairs(ding)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) == len(ding.pairs)
    assert 0.03 < sizes["test"] / len(ding.pairs) < 0.07 and 0.03 < sizes["val"] / len(ding.pairs) < 0.07
    sources = {k: {s for s, _ in v} for k, v in splits.items()}
    assert not sources["train"] & sources["test"] and not sources["train"] & sources["val"]
    assert not sources["val"] & sources["test"]
    assert all(split_of(s) == "test" for s in sources["test"])  # a function of the source alone


def test_tokenizer_splits_punctuation_off_and_decodes_the_references_back(ding, tmp_path):
    data = TranslationData(lambda: ding, batch_size=32, vocab_size=400, run_dir=tmp_path)
    data.prepare_data()
    tokenizer = data.load_tokenizer()
    tokens = tokenizer.encode("She feels hurt. Is it 3.5, or not?").tokens
    assert "".join(tokens) == "▁She▁feels▁hurt.▁Is▁it▁3.5,▁or▁not?"
    assert [t for t in tokens if set(t) & set(".,?")] == [".", ".", ",", "?"]  # each a token of its own
    references = [target for _, target in split_pairs(ding)["test"]]
    decoded = [data.decode(ids) for ids in data.encode(references)]
    known = set("".join(tokenizer.get_vocab()))
    # every reference made of characters the training split has comes back as it was
    assert sum(d == r for d, r in zip(decoded, references)) == sum(set(r) - {" "} <= known for r in references)
    assert sum(d == r for d, r in zip(decoded, references)) > 0.99 * len(references)


def write(tmp_path, data: bytes):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(data)
    return path


def test_tsv_reads_pairs_and_counts_what_it_does_not_keep(tmp_path):
    path = write(tmp_path, "Go.\tGeh.\tCC-BY 2.0 (France)\n\nHi.\tHallo!\nHi.\tHallo!\r\n".encode())
    corpus = parse_tsv(path)
    assert corpus.pairs == [("Go.", "Geh."), ("Hi.", "Hallo!")]
    assert dict(corpus.counts) == {"blank lines": 1, "lines with extra columns (ignored)": 1, "duplicate pairs dropped": 1}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", r"pairs.tsv: the file is empty"),
        (b"\n\n", r"pairs.tsv: the file is empty"),
        (b"Go.\tGeh.\nno tab here\n", r"pairs.tsv:2: no tab; every line must be 'source<TAB>target', got 'no tab here'"),
        (b"Go.\tGeh.\nHi.\tHall\xff!\n", r"pairs.tsv:2: not UTF-8 \(invalid start byte at byte 8\)"),
        (b"Go.\t \n", r"pairs.tsv:1: the target side is empty"),
    ],
    ids=["empty", "blank", "no-tab", "undecodable", "empty-side"],
)
def test_tsv_bad_input_names_file_and_line(tmp_path, data, message):
    with pytest.raises(DataError, match=message):
        parse_tsv(write(tmp_path, data))


def test_corpus_too_small_to_split(tmp_path):
    path = write(tmp_path, "".join(f"Satz {i}.\tSentence {i}.\n" for i in range(40)).encode())
    with pytest.raises(DataError, match=r"40 distinct pairs are too few to split .* at least 100"):
        split_pairs(parse_tsv(path))


def test_sacrebleu_metrics_add_up_to_the_corpus_score(ding):
    pairs = ding.pairs[:300]
    refs = [en for _, en in pairs]
    hyps = [" ".join(en.split()[::-1]) if i % 3 else en for i, en in enumerate(refs)]  # some right, some scrambled
    for kind, corpus_score in (("bleu", sacrebleu.corpus_bleu), ("chrf", sacrebleu.corpus_chrf)):
        metric = SacreBLEUStat(kind)
        metric.update(hyps[:120], refs[:120])
        metric.update(hyps[120:], refs[120:])
        assert metric.compute().item() == pytest.approx(corpus_score(hyps, [refs]).score, abs=1e-9)
    assert SacreBLEUStat("bleu").signature().startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")


@pytest.mark.parametrize("attention, copy", [(False, False), (True, False), (True, True)],
                         ids=["plain", "attention", "copy"])
@pytest.mark.parametrize("cell", ["gru_fused", "lstm_handwritten"])
def test_decoding_a_trained_toy_model_reproduces_memorised_pairs(cell, attention, copy):
    torch.manual_seed(0)
    sources = [[5, 6, 7, 8], [9, 10, 11], [12, 5, 9, 13, 6]]
    targets = [[14, 15, 16], [17, 18, 19, 20, 21], [22, 14, 23]]
    if copy:  # targets that take tokens of their source, and one the source lacks
        targets = [[7, 15, 5], [11, 9, 19, 10, 21], [13, 12, 23]]
    model = Seq2Seq(ModelConfig(cell, 48, bidirectional=True), vocab_size=24, attention=attention, copy=copy)
    pad = torch.nn.utils.rnn.pad_sequence
    src = pad([torch.tensor(s) for s in sources], batch_first=True, padding_value=PAD)
    src_len = torch.tensor([len(s) for s in sources])
    tgt_in = pad([torch.tensor([BOS] + t) for t in targets], batch_first=True, padding_value=PAD)
    tgt_out = pad([torch.tensor(t + [EOS]) for t in targets], batch_first=True, padding_value=PAD)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits = model(src, src_len, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    model.eval()
    for decoded in (greedy(model, src, src_len, 10), beam_search(model, src, src_len, 10, beam=3)):
        for row, target in zip(decoded.tolist(), targets):
            assert row[: len(target) + 1] == target + [EOS]
    # the ranking: candidates sorted by log-probability / length ** alpha, whatever alpha
    tokens, scores, lengths = candidates = beam_candidates(model, src, src_len, 10, beam=3)
    for alpha in (0.0, 1.0, 3.0):
        ranked = rank(candidates, alpha)
        for b in range(len(sources)):
            best = max(range(3), key=lambda k: scores[b, k] / lengths[b, k].clamp(min=1) ** alpha)
            assert ranked[b].tolist() == tokens[b, best].tolist()
    # scored at every length exponent from one search: the memorised pairs give BLEU and chrF 100, length 1
    from types import SimpleNamespace

    from tasks.translation.decoding import scores_by_length_exponent

    decode = SimpleNamespace(decode=lambda ids: " ".join(f"w{i}" for i in ids[: ids.index(EOS) if EOS in ids else None]))
    batch = {"src": src, "src_len": src_len, "tgt_out": tgt_out, "target_text": [decode.decode(t) for t in targets]}
    scores = scores_by_length_exponent(model, [batch], 3, decode)
    for kind, best in (("bleu", 100), ("chrf", 100), ("length_ratio", 1), ("no_eos", 0)):
        assert list(scores[kind]) == list(LENGTH_EXPONENTS)
        assert all(value == pytest.approx(best) for value in scores[kind].values()), (kind, scores[kind])


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_output_layer_at_real_positions_only_gives_the_padded_loss_and_gradients(smoothing):
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig("lstm_fused", 16), vocab_size=30, attention=True, embed=8).double()
    pad = torch.nn.utils.rnn.pad_sequence
    src = pad([torch.randint(4, 30, (n,)) for n in (5, 3, 4)], batch_first=True, padding_value=PAD)
    src_len = torch.tensor([5, 3, 4])
    targets = [torch.randint(4, 30, (n,)) for n in (2, 6, 4)]
    tgt_in = pad([torch.cat([torch.tensor([BOS]), t]) for t in targets], batch_first=True, padding_value=PAD)
    tgt_out = pad([torch.cat([t, torch.tensor([EOS])]) for t in targets], batch_first=True, padding_value=PAD)
    assert (tgt_out == PAD).sum() == 6  # 6 of the 21 positions are padding

    def loss_and_grads(loss_of):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    padded = loss_and_grads(lambda: torch.nn.functional.cross_entropy(
        model(src, src_len, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=PAD, label_smoothing=smoothing))
    logits, target = model.scored(src, src_len, tgt_in, tgt_out)
    assert logits.shape == (15, 30) and target.tolist() == tgt_out[tgt_out != PAD].tolist()
    real = loss_and_grads(lambda: torch.nn.functional.cross_entropy(
        *model.scored(src, src_len, tgt_in, tgt_out), label_smoothing=smoothing))
    torch.testing.assert_close(real[0], padded[0])
    for a, b in zip(real[1], padded[1]):
        torch.testing.assert_close(a, b)


def copying_model(smoothing=0.0):
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig("gru_fused", 16), vocab_size=30, attention=True, embed=8, label_smoothing=smoothing,
                    copy=True).double()
    pad = torch.nn.utils.rnn.pad_sequence
    src = pad([torch.tensor(s) for s in ([5, 6, 7, 5, 8], [9, 10, 11], [12, 13, 14, 15])], batch_first=True,
              padding_value=PAD)
    src_len = torch.tensor([5, 3, 4])
    tgt_in = torch.tensor([[BOS, 5, 20, 8], [BOS, 11, 9, PAD], [BOS, 21, 22, 23]])
    tgt_out = torch.tensor([[5, 20, 8, EOS], [11, 9, EOS, PAD], [21, 22, 23, EOS]])
    return model, src, src_len, tgt_in, tgt_out


def test_copying_mixes_the_output_layer_with_the_attention_on_source_tokens():
    model, src, src_len, tgt_in, tgt_out = copying_model()
    model.eval()
    memory, source, state = model.encode(src, src_len)
    features, _ = model.features(tgt_in, state, memory, source)
    probs = model(src, src_len, tgt_in).exp()  # (B, T, V)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, dtype=torch.float64))
    generated = model.generator(features.output).softmax(-1)
    copied = torch.zeros_like(generated)
    for b in range(3):  # each source token's probability: the attention on its real positions
        for s in range(int(src_len[b])):
            copied[b, :, src[b, s]] += features.weights[b, :, s]
    assert features.weights[1, :, 3:].abs().max() == 0  # nothing on padding
    torch.testing.assert_close(probs, features.generate * generated + (1 - features.generate) * copied)
    assert 0 < features.generate.min() and features.generate.max() < 1
    assert torch.all(copied[0, :, 5] > copied[0, :, 6])  # token 5 occurs twice in the first source


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_copying_training_loss_is_the_mixtures_cross_entropy(smoothing):
    """The training loss reads the targets' probabilities only: it equals the cross-entropy of the
    full mixture (smoothing 0), and smoothing adds the output layer's uniform cross-entropy."""
    model, src, src_len, tgt_in, tgt_out = copying_model(smoothing)

    def loss_and_grads(loss_of):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def full():
        log_probs, target = model.scored(src, src_len, tgt_in, tgt_out)
        nll = torch.nn.functional.nll_loss(log_probs, target)
        memory, source, state = model.encode(src, src_len)
        output = model.features(tgt_in, state, memory, source)[0].output[tgt_out != PAD]
        uniform = -model.generator(output).log_softmax(-1).mean()
        return (1 - smoothing) * nll + smoothing * uniform

    expected, cheap = loss_and_grads(full), loss_and_grads(lambda: model.training_loss(src, src_len, tgt_in, tgt_out))
    torch.testing.assert_close(cheap[0], expected[0])
    for a, b in zip(cheap[1], expected[1]):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="needs attention"):
        Seq2Seq(ModelConfig("gru_fused", 16), vocab_size=30, attention=False, copy=True)


def assert_steps_give_teacher_forcing(model, src, src_len, tgt_in):
    """Decoding one step at a time (as greedy and beam search do) gives what teacher forcing gives."""
    whole = model(src, src_len, tgt_in)
    memory, source, state = model.encode(src, src_len)
    steps = []
    for t in range(tgt_in.shape[1]):
        logits, state = model.decode(tgt_in[:, t : t + 1], state, memory, source)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole)


def test_copying_decodes_step_by_step_as_it_trains():
    model, src, src_len, tgt_in, _ = copying_model()
    model.eval()
    assert_steps_give_teacher_forcing(model, src, src_len, tgt_in)


def test_attention_size_sets_the_additive_scores_width_and_decodes_as_it_trains():
    """The additive score's width (`Seq2SeqSettings.attention`) is apart from the hidden size, the
    quick budget's is narrower than its hidden size, and a narrow one decodes step by step as it trains."""
    from types import SimpleNamespace

    from tasks import TASKS
    from tasks.translation.task import TRANSLATION_BUDGETS

    task = TASKS.get("translation-de-en-attention").configured({})
    quick = task.network(ModelConfig("gru_fused", 256), SimpleNamespace(vocab_size=60), task.budget("quick"))
    width = TRANSLATION_BUDGETS["quick"].network.attention
    assert quick.attention.query.out_features == quick.attention.key.out_features == width
    assert quick.attention.score.in_features == width < 256
    # `-o attention_size=N` overrides the budget's (version 8's was the hidden size)
    wide = task.configured({"attention_size": "256"}).network(ModelConfig("gru_fused", 256),
                                                              SimpleNamespace(vocab_size=60), task.budget("quick"))
    assert wide.attention.score.in_features == 256
    with pytest.raises(ValueError, match="task option attention_size='0'.*positive integer"):
        task.configured({"attention_size": "0"})
    with pytest.raises(ValueError, match="additive score only, not to score=general"):
        task.configured({"attention_size": "32", "score": "general"})
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig("lstm_fused", 16), 50, True, 8, copy=True, attention_size=4).double().eval()
    assert model.attention.query.weight.shape == (4, 16)
    src, src_len = torch.randint(4, 50, (3, 7)), torch.tensor([7, 5, 2])
    assert_steps_give_teacher_forcing(model, src, src_len, torch.randint(4, 50, (3, 6)))


def test_translation_run_stores_bleu_chrf_perplexity_and_examples(shared_data, tmp_path):
    result = runner.invoke(app, ["run", "--task", "translation-de-en-attention", "--cell", "gru_handwritten",
                                 "--budget", "smoke", "--bidirectional", "-o", "beam=2", "--out", str(tmp_path),
                                 "--data-dir", str(shared_data)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["status"] == "ok" and row["metric_name"] == "bleu"
    assert set(row["metrics"]) >= {"bleu", "chrf", "perplexity"}
    assert 0 <= row["metric_value"] <= 100 and row["metrics"]["perplexity"] > 1
    assert row["tokens_per_s"] > row["samples_per_s"] > 0
    artifacts = row["artifacts"]
    assert len(artifacts["examples"]) == 6 and all(e["reference"] for e in artifacts["examples"])
    (picture,) = artifacts["pictures"]  # attention and p(copy) for the example with the most copying
    assert (tmp_path / picture["path"]).stat().st_size > 1000 and 0 <= picture["example"] < 6
    assert 0 < picture["mean_copy"] < 1 and "p(copy)" in picture["caption"]
    report = (tmp_path / "report.md").read_text()
    assert f"]({picture['path']})" in report
    assert artifacts["corpus"]["pairs"] > 19_000 and artifacts["splits"]["test"] > 500
    assert artifacts["bleu_signature"].startswith("nrefs:1|case:mixed")
    assert (tmp_path / "runs" / row["run_id"] / "tokenizer.json").is_file()
    assert row["config"]["task_config"]["options"] == {"beam": 2, "length": "val", "length_by": "length",
                                                          "dropout": None, "embeddings": None,
                                                          "score": "additive",
                                                          "attention_size": None, "output": "copy", "entries": 0}
    # the length exponent: the one of the grid whose validation outputs' length came nearest the
    # references' (ties: the nearest to 1), used for the test; BLEU and chrF of each kept beside
    ratio = {float(a): r for a, r in artifacts["length_exponent_val_length_ratio"].items()}
    assert sorted(ratio) == list(LENGTH_EXPONENTS) and all(r > 0 for r in ratio.values())
    assert artifacts["length_exponent"] == min(ratio, key=lambda a: (abs(ratio[a] - 1), abs(a - 1)))
    for kind in ("bleu", "chrf"):
        assert sorted(float(a) for a in artifacts[f"length_exponent_val_{kind}"]) == list(LENGTH_EXPONENTS)
    report = (tmp_path / "report.md").read_text()
    assert "test chrf" in report and "test perplexity" in report and "tokens/s" in report
    assert artifacts["examples"][0]["source"] in report and "SacreBLEU signatures" in report


def test_tsv_task_runs_on_a_user_corpus_and_needs_one(ding, shared_data, tmp_path):
    path = tmp_path / "deu.txt"
    path.write_text("".join(f"{en}\t{de}\tCC-BY\n" for de, en in ding.pairs[:400]), encoding="utf-8")
    args = ["run", "--task", "translation-tsv", "--cell", "rnn_fused", "--budget", "smoke", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "needs --task-option corpus=PATH" in result.output
    result = runner.invoke(app, [*args, "-o", "corpus=/nowhere.tsv"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "task option corpus='/nowhere.tsv': no such file" in result.output
    result = runner.invoke(app, [*args, "-o", f"corpus={path}", "-o", "length=short"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "task option length='short': must be val or a number from 0 to 5" in result.output
    result = runner.invoke(app, [*args, "-o", f"corpus={path}", "-o", "entries=100"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "has no option 'entries'; its options: beam, length, length_by, dropout, embeddings, corpus" in result.output
    result = runner.invoke(app, [*args, "-o", "beam"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--task-option must be NAME=VALUE (e.g. length=100), got 'beam'" in result.output
    result = runner.invoke(app, [*args, "-o", f"corpus={path}", "-o", "length=0"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path / "out").rows()
    # a fixed length exponent, even 0 (the summed log-probability), is used as given: no tuning
    assert row["artifacts"]["length_exponent"] == 0.0 and row["artifacts"]["length_exponent_val_bleu"] is None
    assert row["artifacts"]["corpus"]["not kept"]["lines with extra columns (ignored)"] == 400
    assert row["config"]["task_config"]["corpus_md5"]


def test_entries_option_is_checked(shared_data, tmp_path):
    args = smoke_args(tmp_path, shared_data)
    for bad in ("-1", "many"):
        result = runner.invoke(app, [*args, "-o", f"entries={bad}"], env={"COLUMNS": "200"})
        assert result.exit_code == 2 and f"task option entries='{bad}'" in result.output, result.output
        assert "must be 0 or a positive integer" in result.output
    result = runner.invoke(app, [*args, "-o", "entries=300"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["config"]["task_config"]["options"]["entries"] == 300
    assert 290 <= row["artifacts"]["corpus"]["dictionary entries trained on"] <= 300


def test_output_option_is_checked(shared_data, tmp_path):
    args = smoke_args(tmp_path, shared_data)
    result = runner.invoke(app, [*args, "-o", "output=pointer"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "task option output='pointer'" in result.output, result.output
    assert "must be one of copy, generate" in result.output
    result = runner.invoke(app, [*args, "-o", "output=generate"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    assert row["config"]["task_config"]["options"]["output"] == "generate"
    (picture,) = row["artifacts"]["pictures"]  # the attention alone: nothing copied
    assert picture["mean_copy"] is None and (tmp_path / picture["path"]).is_file() and "p(copy)" not in picture["caption"]
    assert "output" not in TASKS.get("translation-de-en").options  # no attention, nothing to copy with
    # the baselines read the data only: computed for the first run, shared by the second
    (_,) = {b["task_configuration_id"] for b in ResultsStore(tmp_path).rows("baselines")}
    assert "output" not in ResultsStore(tmp_path).rows("baselines")[0]["task_options"]
    config = RunConfig(task="translation-de-en-attention", cell="rnn_fused", budget="smoke",
                       task_options=(("output", "copy"), ("beam", "1"), ("score", "additive")))
    assert ensure_baselines(config, tmp_path, shared_data, download=False) == 0


def test_dropout_keeps_each_value_with_probability_one_minus_p_and_scales_it():
    """The task's dropout (its mask drawn by `rand_like` on CPU) does what `nn.Dropout` does: in
    training each value is kept with probability 1 - p and scaled by 1 / (1 - p), its gradient
    goes through the same mask; in evaluation it passes values through."""
    from tasks.translation.model import Dropout

    drop = Dropout(0.3)
    torch.manual_seed(0)
    x = torch.full((200, 500), 2.0, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.01)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 2.0 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # one seed, one mask
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x) and not Dropout(1.0).train()(x).any()


@pytest.mark.parametrize("attention, copy", [(False, False), (True, False), (True, True)])
def test_tied_embeddings_share_the_output_layers_weights(attention, copy):
    """`tie`: the output layer's weights are the embedding's (one tensor, one gradient from both
    uses), the model decodes step by step as it trains, and a checkpoint loads into a fresh model."""
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig("lstm_fused", 16), 40, attention, 8, label_smoothing=0.1, copy=copy, tie=True).double()
    assert model.generator.tied[0] is model.embedding
    untied = sum(p.numel() for p in Seq2Seq(ModelConfig("lstm_fused", 16), 40, attention, 8, copy=copy).parameters())
    assert sum(p.numel() for p in model.parameters()) < untied
    src, src_len = torch.randint(4, 40, (3, 6)), torch.tensor([6, 4, 2])
    tgt_in, tgt_out = torch.randint(4, 40, (3, 5)), torch.randint(4, 40, (3, 5))
    features = model.encode(src, src_len)
    logits = model.decode(tgt_in, features[2], features[0], features[1])[0]
    assert logits.shape == (3, 5, 40)
    # the output layer's use of the embedding alone gives it a gradient at every row
    token_rows = torch.zeros(40, dtype=torch.bool)
    token_rows[src.unique()] = token_rows[tgt_in.unique()] = True
    model.zero_grad()
    loss = model.training_loss(src, src_len, tgt_in, tgt_out)
    loss.backward()
    assert (model.embedding.weight.grad[~token_rows].abs().sum(-1) > 0).all()  # rows never embedded here
    model.eval()
    assert_steps_give_teacher_forcing(model, src, src_len, tgt_in)
    fresh = Seq2Seq(ModelConfig("lstm_fused", 16), 40, attention, 8, copy=copy, tie=True).double().eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(src, src_len, tgt_in), model(src, src_len, tgt_in))


def test_dropout_and_embeddings_options_override_the_budgets_and_are_checked():
    """`-o dropout=P` sets the dropout on the embeddings and the output features, `-o embeddings=tied|apart`
    whether the output layer's weights are the embedding's; by default, the budget's (quick: tied)."""
    from types import SimpleNamespace

    from tasks import TASKS
    from tasks.translation.task import TRANSLATION_BUDGETS

    for name in ("translation-de-en", "translation-de-en-attention"):
        task = TASKS.get(name).configured({})
        net = task.network(ModelConfig("gru_fused", 32), SimpleNamespace(vocab_size=60), task.budget("quick"))
        assert net.drop.p == TRANSLATION_BUDGETS["quick"].network.dropout > 0
        net = task.configured({"dropout": "0.2"}).network(ModelConfig("gru_fused", 32), SimpleNamespace(vocab_size=60),
                                                          task.budget("quick"))
        assert net.drop.p == 0.2
        net = task.configured({"dropout": "0"}).network(ModelConfig("gru_fused", 32), SimpleNamespace(vocab_size=60),
                                                        task.budget("quick"))
        assert net.drop.p == 0.0  # 0 is a value, not "the budget's"
        quick = task.network(ModelConfig("gru_fused", 32), SimpleNamespace(vocab_size=60), task.budget("quick"))
        assert TRANSLATION_BUDGETS["quick"].network.tie and isinstance(quick.generator, TiedOutput)  # version 10
        apart = task.configured({"embeddings": "apart"}).network(ModelConfig("gru_fused", 32),
                                                                  SimpleNamespace(vocab_size=60), task.budget("quick"))
        assert isinstance(apart.generator, torch.nn.Linear) and apart.generator.weight.shape == (60, 32)
        smoke = task.configured({"embeddings": "tied"}).network(ModelConfig("gru_fused", 32),
                                                                 SimpleNamespace(vocab_size=60), task.budget("smoke"))
        assert isinstance(smoke.generator, TiedOutput) and not TRANSLATION_BUDGETS["smoke"].network.tie
        for bad in ("1", "-0.1", "nan", "a lot"):
            with pytest.raises(ValueError, match=f"task option dropout='{bad}'.*probability from 0 up to"):
                task.configured({"dropout": bad})


def test_attention_size_and_dropout_options_through_the_cli(shared_data, tmp_path):
    args = smoke_args(tmp_path, shared_data)
    result = runner.invoke(app, [*args, "-o", "attention_size=0"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "task option attention_size='0'" in result.output, result.output
    assert "must be a positive integer" in result.output
    result = runner.invoke(app, [*args, "-o", "attention_size=8", "-o", "score=general"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "attention_size applies to the additive score only" in result.output, result.output
    result = runner.invoke(app, [*args, "-o", "dropout=1.5"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "task option dropout='1.5'" in result.output, result.output
    result = runner.invoke(app, [*args, "-o", "embeddings=shared"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "task option embeddings='shared'" in result.output, result.output
    assert "must be one of apart, tied" in result.output
    result = runner.invoke(app, [*args, "-o", "length_by=chrf"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "task option length_by='chrf': must be one of bleu, length" in result.output
    result = runner.invoke(app, [*args, "-o", "length=1", "-o", "length_by=bleu"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "but length=1.0 fixes it" in result.output, result.output
    result = runner.invoke(app, [*args, "-o", "attention_size=8", "-o", "dropout=0.25", "-o", "embeddings=tied",
                                 "-o", "length_by=bleu"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (row,) = ResultsStore(tmp_path).rows()
    # version 10's rule: the length exponent with the highest validation BLEU (ties: the nearest to 1)
    val_bleu = {float(a): b for a, b in row["artifacts"]["length_exponent_val_bleu"].items()}
    assert sorted(val_bleu) == list(LENGTH_EXPONENTS) and row["config"]["task_config"]["options"]["length_by"] == "bleu"
    assert row["artifacts"]["length_exponent"] == max(val_bleu, key=lambda a: (val_bleu[a], -abs(a - 1)))
    assert row["config"]["task_config"]["options"]["attention_size"] == 8
    assert row["config"]["task_config"]["options"]["dropout"] == 0.25
    assert row["config"]["task_config"]["options"]["embeddings"] == "tied"


def test_length_exponent_choice_by_bleu_or_by_length():
    from tasks.translation.decoding import choose_length_exponent

    grid = list(LENGTH_EXPONENTS)
    bleu = dict.fromkeys(grid, 5.0) | {0.8: 5.1}
    ratio = {a: 0.8 + 0.1 * i for i, a in enumerate(grid)}  # 0.8, 0.9, ..., 1.5: 1.0 at a = 1.0
    scores = {"bleu": bleu, "chrf": {a: 20 + a for a in grid}, "length_ratio": ratio}
    assert choose_length_exponent(scores, "bleu") == 0.8
    assert choose_length_exponent(scores, "length") == 1.0
    assert choose_length_exponent(scores, "chrf") == 1.5
    # ties go to the a nearest 1: equal BLEU everywhere, or lengths equally far from the references'
    assert choose_length_exponent({**scores, "bleu": dict.fromkeys(grid, 5.0)}, "bleu") == 1.0
    assert choose_length_exponent({**scores, "length_ratio": {a: 1.2 if a < 1.2 else 0.8 for a in grid}}, "length") == 1.0
    assert choose_length_exponent({**scores, "length_ratio": {a: 0.5 + a / 2 for a in grid}}, "length") == 1.0
    assert choose_length_exponent({**scores, "length_ratio": {a: 0.5 + a / 4 for a in grid}}, "length") == 1.5
