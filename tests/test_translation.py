"""The translation task adapter (qd/tasks/translation.py): batches, losses, distillation, beam search
and scores, on a tiny corpus prepared in the test."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from qd.policy import QuantPolicy, quantized_names
from qd.ste import UniformQuantizer, quantized_forward
from qd.tasks import load_task
from qd.tasks.translation import TopK, Translation, token_agreement
from qd.text.prepare import prepare_translation
from test_translation_data import spec, tiny_splits, write_multi30k

CPU = torch.device("cpu")
STUDENT = {"family": "lstm", "name": "tiny", "layers": 1, "hidden": 32, "embed": 16, "dropout_rate": 0.0,
           "init_range": 0.1}
EVAL = {"batch_size": 64, "beam": 3, "decode_max_length": 30, "replace_unk": True}
DISTILL = {"temperature": 1.0, "weight": 0.7, "reduction": "token_mean", "mask_padding": True, "cache_topk": 0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny recurrent models run step by step: one intra-op thread is fastest, and on a shared machine
    several threads spinning on each step's barrier are far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("translation")
    prepare_translation(spec(write_multi30k(tmp / "raw", tiny_splits(120, 10, 12))), tmp / "data")
    return tmp / "data"


@pytest.fixture(scope="module")
def task(folder) -> Translation:
    return Translation({"evaluation": EVAL, "distill": DISTILL}, folder, CPU)


def adam_steps(task, model, batches, steps, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        for b in batches:
            loss = task.loss(model(*task.inputs(b)), b)
            opt.zero_grad()
            loss.backward()
            opt.step()


# ------------------------------------------------------------------------------------------ end to end


def test_registry_loads_the_adapter():
    assert load_task("translation") is Translation


def test_tokenise_binarise_train_two_steps_decode_and_score(task, tmp_path):
    torch.manual_seed(0)
    model = task.new_model(STUDENT)
    b = next(task.train_batches(16, torch.Generator().manual_seed(0)))
    model.eval()
    before = task.loss(model(*task.inputs(b)), b).item()
    adam_steps(task, model, [b], steps=2)
    model.eval()
    assert task.loss(model(*task.inputs(b)), b).item() < before
    row, files = task.final_metrics(model)
    assert set(row) == {"bleu", "bleu_legacy", "ppl", "val_ppl", "token_agreement", "sacrebleu_signature",
                        "bleu_legacy_signature", "n_test"}
    assert "tok:none" in row["bleu_legacy_signature"] and "case:lc" in row["bleu_legacy_signature"]
    assert row["n_test"] == 12 and 0 <= row["bleu"] <= 100 and 0 <= row["bleu_legacy"] <= 100
    assert row["sacrebleu_signature"].startswith("nrefs:1|case:lc|") and "tok:13a" in row["sacrebleu_signature"]
    assert row["token_agreement"] is None
    assert row["ppl"] == pytest.approx(math.exp(task.epoch_metrics(model, "test")["loss"]))
    assert len(files["test_hypotheses.txt"].splitlines()) == 12
    # a teacher's hypotheses switch on the token agreement: the model agrees with itself fully
    (tmp_path / "test_hypotheses.txt").write_text(files["test_hypotheses.txt"])
    task.load_teacher_hypotheses(tmp_path)
    try:
        assert task.final_metrics(model)[0]["token_agreement"] == pytest.approx(100.0)
    finally:
        task.teacher_hypotheses = None


def test_a_memorised_corpus_translates_perfectly(tmp_path):
    """Train on 6 pairs, test on the same 6: beam search, detokenisation and both BLEUs must give 100."""
    pairs = tiny_splits(6, 6, 6)["train"]
    data = tmp_path / "data"
    prepare_translation(spec(write_multi30k(tmp_path / "raw", {"train": pairs, "val": pairs, "test": pairs})), data)
    task = Translation({"evaluation": EVAL}, data, CPU)
    torch.manual_seed(0)
    model = task.new_model({**STUDENT, "hidden": 48})
    adam_steps(task, model, list(task.eval_batches("train", 6)), steps=150, lr=2e-2)
    row, files = task.final_metrics(model)
    # detokenisation restores the raw text (lowercased, as the data was)
    assert files["test_hypotheses.txt"].splitlines() == [en.lower() for _, en in pairs]
    assert row["bleu"] == pytest.approx(100.0) and row["bleu_legacy"] == pytest.approx(100.0)
    assert row["ppl"] < 1.1


# ------------------------------------------------------------------------------------------ batches


def test_an_epoch_covers_every_training_pair_once_in_length_sorted_batches(task):
    batches = list(task.train_batches(16, torch.Generator().manual_seed(3)))
    assert len(batches) == task.n_train_batches(16) == math.ceil(120 / 16)
    ids = torch.cat([b["id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(120))
    src, tgt = task.data.tokens["train"]
    for b in batches:
        for row, i in enumerate(b["id"].tolist()):
            n = len(src[i])
            assert torch.equal(b["src_tokens"][row, -n:], src[i])  # left-padded, ending with </s>
            assert torch.equal(b["target"][row, :len(tgt[i])], tgt[i])
            assert b["prev_output_tokens"][row, 0] == task.eos
            assert torch.equal(b["prev_output_tokens"][row, 1:len(tgt[i])], tgt[i][:-1])
        assert b["ntokens"] == sum(len(tgt[i]) for i in b["id"].tolist())
    # the fairseq order groups similar lengths: less padding than batches of a plain shuffle
    padding = sum(int(b["src_tokens"].eq(task.pad).sum()) for b in batches)
    g = torch.Generator().manual_seed(3)
    plain = torch.randperm(120, generator=g).split(16)
    padding_plain = sum(int(task._collate("train", c.tolist())["src_tokens"].eq(task.pad).sum()) for c in plain)
    assert padding < padding_plain


def test_epochs_are_a_function_of_the_generator(task):
    def ids(seed):
        return [b["id"].tolist() for b in task.train_batches(16, torch.Generator().manual_seed(seed))]

    assert ids(1) == ids(1) and ids(1) != ids(2)


def test_eval_batches_respect_the_logits_budget(task, monkeypatch):
    monkeypatch.setattr("qd.tasks.translation.LOGITS_BUDGET", 40 * len(task.tgt_dict))
    batches = list(task.eval_batches("test", 64))
    assert sorted(torch.cat([b["id"] for b in batches]).tolist()) == list(range(12))
    assert len(batches) > 1 and all(b["target"].numel() <= 40 for b in batches)


def test_perplexity_is_that_of_sentences_scored_one_by_one(task):
    torch.manual_seed(1)
    model = task.new_model(STUDENT).eval()
    nll = tokens = 0.0
    for i in range(12):
        b = task._collate("test", [i])
        nll += task.loss(model(*task.inputs(b)), b).item() * b["ntokens"]
        tokens += b["ntokens"]
    metrics = task.epoch_metrics(model, "test")
    assert metrics["loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)


def test_example_input_has_the_batch_size(task):
    src, lengths, prev = task.example_input(20)
    assert src.shape[0] == lengths.shape[0] == prev.shape[0] == 20


# ------------------------------------------------------------------------------------------ distillation


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def _hand_case():
    """Two sentences, three positions, vocabulary of 4 (index 1 = padding); sentence 2 has one pad."""
    s = torch.tensor([[[0.1, 0.0, 1.2, -0.3], [0.5, 0.0, -1.0, 2.0], [1.0, 0.0, 0.2, 0.3]],
                      [[-0.2, 0.0, 0.4, 1.1], [0.9, 0.0, 0.1, -0.5], [0.3, 0.0, 0.3, 0.3]]])
    t = torch.tensor([[[0.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 1.5], [0.5, 0.0, 0.5, -1.0]],
                      [[0.0, 0.0, 0.0, 2.5], [2.0, 0.0, -1.0, 0.0], [-1.0, 0.0, 1.0, 0.0]]])
    target = torch.tensor([[2, 3, 0], [3, 0, 1]])
    return s, t, target


@pytest.mark.parametrize("reduction", ["token_mean", "sentence_sum"])
@pytest.mark.parametrize("mask_padding", [True, False])
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_distillation_loss_against_a_hand_computation(task, reduction, mask_padding, T):
    s, t, target = _hand_case()
    w = 0.6
    nll, kl, real_positions = 0.0, 0.0, 0
    for b in range(2):
        for j in range(3):
            if target[b, j] != 1:
                nll -= math.log(_softmax(s[b, j].tolist(), 1.0)[target[b, j]])
                real_positions += 1
            if target[b, j] != 1 or not mask_padding:
                kl += _kl(_softmax(t[b, j].tolist(), T), _softmax(s[b, j].tolist(), T))
    counted = real_positions if mask_padding else 6
    if reduction == "token_mean":
        expected = (1 - w) * nll / real_positions + w * T**2 * kl / counted
    else:
        expected = (1 - w) * nll / 2 + w * T**2 * kl / 2
    distill = {"temperature": T, "weight": w, "reduction": reduction, "mask_padding": mask_padding}
    got = task.distillation_loss((s,), t, {"target": target}, distill)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_topk_teacher_is_renormalised_over_its_k_words(task):
    s, t, target = _hand_case()
    T = 1.5
    distill = {"temperature": T, "weight": 1.0, "reduction": "token_mean", "mask_padding": True}
    full = task.distillation_loss((s,), t, {"target": target}, distill)
    # k = V: the same distribution, the same loss
    vals, idx = t.topk(4, dim=-1)
    same = task.distillation_loss((s,), TopK(vals, idx), {"target": target}, distill)
    assert same.item() == pytest.approx(full.item())
    # k = 2 by hand: p over the two largest teacher logits, student log-probabilities at those words
    vals, idx = t.topk(2, dim=-1)
    kl, n = 0.0, 0
    for b in range(2):
        for j in range(3):
            if target[b, j] == 1:
                continue
            p = _softmax(vals[b, j].tolist(), T)
            q = _softmax(s[b, j].tolist(), T)
            kl += sum(pk * (math.log(pk) - math.log(q[i])) for pk, i in zip(p, idx[b, j].tolist()))
            n += 1
    got = task.distillation_loss((s,), TopK(vals, idx), {"target": target}, distill)
    assert got.item() == pytest.approx(T**2 * kl / n, rel=1e-6)


class CountingTeacher(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, *args):
        self.calls += 1
        return self.model(*args)


def test_topk_cache_runs_the_teacher_once_per_run(folder, monkeypatch):
    task = Translation({"evaluation": EVAL, "distill": {**DISTILL, "cache_topk": 3}}, folder, CPU)
    # a logits budget of 300 target positions: the fill runs in several batches
    monkeypatch.setattr("qd.tasks.translation.LOGITS_BUDGET", 300 * len(task.tgt_dict))
    torch.manual_seed(2)
    teacher = CountingTeacher(task.new_model({**STUDENT, "dropout_rate": 0.3}))
    first = list(task.train_batches(16, torch.Generator().manual_seed(0)))
    cached = {int(b["id"][0]): task.teacher_output(teacher, b) for b in first}
    fill_calls = teacher.calls
    assert 1 < fill_calls < len(first) and not teacher.model.training  # the whole set, in large batches
    for b in task.train_batches(16, torch.Generator().manual_seed(1)):  # another epoch, other batches
        out = task.teacher_output(teacher, b)
        assert isinstance(out, TopK) and out.logits.shape == (*b["target"].shape, 3)
        full = teacher.model(*task.inputs(b))[0]
        real = b["target"].ne(task.pad)
        vals, idx = full.topk(3, dim=-1)
        assert torch.allclose(out.logits[real], vals[real], atol=1e-5) and torch.equal(out.indices[real], idx[real])
    assert teacher.calls == fill_calls  # the epochs read the cache (the reference calls bypass the counter)
    assert cached  # the first epoch's outputs were top-k too
    # evaluation batches never touch the cache: their ids are not training ids
    val = next(task.eval_batches("val", 64))
    assert isinstance(task.teacher_output(teacher, val), torch.Tensor)


def test_distill_options_are_checked(folder):
    with pytest.raises(ValueError, match="cache_topk > 0 needs distill.mask_padding: true"):
        Translation({"distill": {**DISTILL, "cache_topk": 4, "mask_padding": False}}, folder, CPU)
    with pytest.raises(ValueError, match="reduction for translation must be one of"):
        Translation({"distill": {**DISTILL, "reduction": "batchmean"}}, folder, CPU)
    with pytest.raises(ValueError, match="set distill.cache_topk"):
        Translation({"distill": {**DISTILL, "cache_teacher": True, "cache_topk": 0}}, folder, CPU)
    # cache_topk caches unless cache_teacher is explicitly off
    assert Translation.cached_topk({"cache_topk": 8}) == 8
    assert Translation.cached_topk({"cache_topk": 8, "cache_teacher": True}) == 8
    assert Translation.cached_topk({"cache_topk": 8, "cache_teacher": False}) == 0


def test_quantized_distillation_step_through_functional_call(task):
    """One QD step: distillation loss through Q(w) of every LSTM, embedding and generator tensor."""
    torch.manual_seed(0)
    student, teacher = task.new_model(STUDENT), task.new_model({**STUDENT, "hidden": 40}).eval()
    quantizer = UniformQuantizer(2, 64)
    names = quantized_names(student, QuantPolicy("all"))
    b = next(task.train_batches(16, torch.Generator().manual_seed(0)))
    out = quantized_forward(student, {n: quantizer for n in names}, *task.inputs(b))
    loss = task.distillation_loss(out, task.teacher_output(teacher, b), b, DISTILL)
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert student.encoder.lstm.weight_hh_l0.grad.abs().sum() > 0 and student.decoder.fc_out.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ scoring parts


def test_token_agreement_is_position_wise_over_the_longer_sentence():
    # "a dog runs ." vs "a cat runs fast ." -> a, runs match at positions 0 and 2 of 5 -> 40%;
    # identical second pair -> 100%; mean 70%
    assert token_agreement(["A dog runs.", "Hello there."], ["a cat runs fast.", "Hello there."], "en") == \
        pytest.approx(70.0)


def test_unknown_words_are_replaced_by_the_most_attended_source_word(task):
    d = task.tgt_dict
    known = d[5]
    hypo = {"tokens": torch.tensor([5, d.unk(), d.unk(), d.eos()]),
            # rows: 3 source words, then </s>, then padding; columns: target positions
            "attention": torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.05, 0.7, 0.1, 0.0], [0.05, 0.1, 0.2, 0.1],
                                       [0.0, 0.1, 0.7, 0.9], [0.0, 0.0, 0.0, 0.0]])}
    words = task._words(hypo, ["haus", "katze", "maus"], replace_unk=True)
    assert words == [known, "katze", "maus"]  # not "</s>", which got the most attention at step 3
    assert task._words(hypo, ["haus", "katze", "maus"], replace_unk=False) == [known, "<unk>", "<unk>"]
