"""The official NMT recipe's switches (issue 21, items 2, 4, 11 and 13): the fp loss on the official
sentence-sum scale, the final model of QD quantizing every tensor, DQ's gradient norms read in train
mode on shuffled batches, and the legacy BLEU computed without sacreBLEU's detokenisation warning.
Each switch enters a run's spec only when set, so the presets that leave it off keep their hashes."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from qd.config import load_config, planned_runs, preset_file, run_spec
from qd.errors import ConfigError
from qd.tasks.translation import Translation
from qd.text.prepare import prepare_translation
from test_translation_data import spec, tiny_splits, write_multi30k

CPU = torch.device("cpu")
STUDENT = {"family": "lstm", "name": "tiny", "layers": 1, "hidden": 16, "embed": 8, "dropout_rate": 0.0,
           "init_range": 0.1}
EVAL = {"batch_size": 64, "beam": 2, "decode_max_length": 20, "replace_unk": True}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("nmt_recipe")
    prepare_translation(spec(write_multi30k(tmp / "raw", tiny_splits(40, 6, 6))), tmp / "data")
    return tmp / "data"


# ------------------------------------------------------------------ item 2: the fp loss's reduction


def test_fp_loss_sentence_sum_is_the_official_scale_and_that_of_the_distillation_hard_term(folder):
    default = Translation({"evaluation": EVAL}, folder, CPU)
    official = Translation({"evaluation": EVAL, "train": {"loss_reduction": "sentence_sum"}}, folder, CPU)
    torch.manual_seed(0)
    model = default.new_model(STUDENT).eval()
    batch = next(default.train_batches(8, torch.Generator().manual_seed(0)))
    out = model(*default.inputs(batch))
    logits, target = out[0], batch["target"]
    summed = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=default.pad,
                             reduction="sum")
    assert default.loss(out, batch).item() == pytest.approx((summed / target.ne(default.pad).sum()).item())
    assert official.loss(out, batch).item() == pytest.approx((summed / target.shape[0]).item())
    assert official.loss(out, batch).item() > 3 * default.loss(out, batch).item()  # sentences of several tokens
    # the distilled runs' sentence_sum: with no soft weight it is the fp loss, so fp and distill share a scale
    distill = {"temperature": 1.0, "weight": 0.0, "reduction": "sentence_sum", "mask_padding": False}
    assert official.distillation_loss(out, out[0], batch, distill).item() == pytest.approx(official.loss(out, batch).item())


def test_fp_loss_reduction_is_checked(folder):
    task = Translation({"evaluation": EVAL, "train": {"loss_reduction": "sentences"}}, folder, CPU)
    batch = next(task.train_batches(8, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    model = task.new_model(STUDENT)
    with pytest.raises(ValueError, match="train.loss_reduction"):
        task.loss(model(*task.inputs(batch)), batch)


def _specs(preset: str, overrides: dict | None = None) -> dict:
    cfg = load_config(preset_file(preset), overrides)
    return {r.path: run_spec(cfg, r) for r in planned_runs(cfg)}


def test_loss_reduction_enters_the_spec_only_when_set():
    plain = _specs("multi30k-cpu")
    assert not any("loss_reduction" in s.get("train", {}) for s in plain.values())
    official = _specs("multi30k-cpu", {"tasks": {"multi30k": {"train": {"loss_reduction": "sentence_sum"}}}})
    trained = [s for s in official.values() if "train" in s]
    assert trained and all(s["train"]["loss_reduction"] == "sentence_sum" for s in trained)
    assert any(s["role"] == "teacher" for s in trained)  # the teacher is on the same scale


def test_loss_reduction_is_refused_on_a_classification_task():
    with pytest.raises(ConfigError, match="loss_reduction"):
        load_config(preset_file("cifar10-cpu"), {"train": {"loss_reduction": "sentence_sum"}})


# ------------------------------------------------------------------ item 4: QD's final model quantizes all


class _Ctx:
    """The part of qd.methods.contract.RunContext the QD method reads, without a task or training."""

    def __init__(self, options: dict):
        from qd.ste import UniformQuantizer

        self.spec = {"method": {"options": options}}
        self._quantizer = UniformQuantizer(2, 4, False, None)
        self.teacher = None

    def new_model(self):
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))

    def uniform_quantizer(self):
        return self._quantizer

    def quantized_names(self, model):
        from qd.policy import QuantPolicy, quantized_names

        return quantized_names(model, QuantPolicy("paper_index"))

    def objective(self, forward, teacher=None):
        return None

    def evaluator(self, forward):
        return None

    def fit(self, fit):
        return []


@pytest.mark.parametrize("final_all", [False, True])
def test_qd_final_quantize_all_quantizes_what_the_policy_trained_in_fp32(final_all):
    from qd.methods.quantized_distillation import quantized_distillation

    options = {"final_quantize_all": True} if final_all else {}
    result = quantized_distillation(_Ctx(options))
    every = [n for n, _ in result.model.named_parameters()]
    assert list(result.codes) == (every if final_all else every[1:-1])  # paper_index: index 0 and last kept
    assert result.extra == ({"final_policy": "all"} if final_all else {})
    emb = result.model[0].weight
    if final_all:  # the source embedding holds 4 levels per bucket of 4
        for bucket in emb.detach().reshape(-1, 4):
            assert len(torch.unique(bucket)) <= 4


def test_final_quantize_all_is_an_option_of_the_schema_and_enters_only_the_spec_that_sets_it():
    plain = _specs("multi30k-cpu")
    assert not any("final_quantize_all" in s["method"]["options"] for s in plain.values())
    set_ = _specs("multi30k-cpu", {"methods": {"qd": {"final_quantize_all": True}}})
    qd = [s for p, s in set_.items() if "/qd/" in p]
    assert qd and all(s["method"]["options"]["final_quantize_all"] is True for s in qd)


# ------------------------------------------------------------------ item 11: DQ's gradient norms


class _Probe(nn.Module):
    """Records the mode of each forward pass and the batches it saw."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.modes, self.seen = [], []

    def forward(self, x):
        self.modes.append(self.training)
        self.seen.append(x.clone())
        return (x * self.w).sum()


class _Task:
    """Twelve examples: eval batches in order, train batches shuffled by the generator."""

    data = torch.arange(36.0).reshape(12, 3)

    def eval_batches(self, split, batch_size):
        yield from self.data.split(batch_size)

    def train_batches(self, batch_size, generator):
        yield from self.data[torch.randperm(12, generator=generator)].split(batch_size)

    def inputs(self, batch):
        return (batch,)

    def loss(self, output, batch):
        return output


def test_gradient_norms_read_in_train_mode_on_shuffled_batches_when_asked():
    from qd.methods.differentiable_quantization import gradient_norms

    model = _Probe().eval()
    gradient_norms(model, ["w"], _Task(), 1, 4)
    assert model.modes == [False] and torch.equal(model.seen[0], _Task.data[:4])  # today's default
    model = _Probe().eval()
    norms = gradient_norms(model, ["w"], _Task(), 1, 4, "training", seed=3)
    first = _Task.data[torch.randperm(12, generator=torch.Generator().manual_seed(3))][:4]
    assert model.modes == [True] and torch.equal(model.seen[0], first)  # the official code's
    assert norms == [pytest.approx(first.sum(0).norm().item())]
    assert not model.training  # the mode it came in with
    with pytest.raises(ValueError, match="redistribute_from"):
        gradient_norms(model, ["w"], _Task(), 1, 4, "shuffled")


def test_redistribute_from_is_an_option_of_the_schema():
    set_ = _specs("multi30k-cpu", {"methods": {"dq": {"redistribute_from": "training"}}})
    dq = [s for p, s in set_.items() if "/dq/" in p]
    assert dq and all(s["method"]["options"]["redistribute_from"] == "training" for s in dq)
    assert not any("redistribute_from" in s["method"]["options"] for s in _specs("multi30k-cpu").values())


# ------------------------------------------------------------------ item 13: the legacy BLEU is silent


def test_legacy_bleu_does_not_warn_about_its_tokenised_text(caplog):
    from sacrebleu.metrics import BLEU

    from qd.tasks.translation import legacy_bleu

    hyps = [f"the number {i} ." for i in range(120)]  # tokenised on purpose: the official multi-bleu -lc
    refs = [f"The number {i} ." for i in range(120)]
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        BLEU(tokenize="none").corpus_score(hyps, [refs])
    assert "forgot to detokenize" in caplog.text  # sacreBLEU's check fires on this text ...
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        score, signature = legacy_bleu(hyps, refs)
    assert "detokenize" not in caplog.text  # ... but not for the legacy score
    assert score == pytest.approx(100.0)
    assert "case:lc" in signature and "tok:none" in signature and "smooth:none" in signature


def test_official_nmt_dq_runs_on_plain_nll_with_train_mode_norms_and_repeats(folder, tmp_path):
    """The onmt-integ DQ recipe end to end on a tiny corpus: no distillation, the fp loss's sentence sum,
    the gradient norms of a train-mode copy on a shuffled batch; the source student is left as it was,
    and two runs of one spec agree bit for bit whatever the global generator held."""
    from qd.methods.contract import RunContext
    from qd.methods.differentiable_quantization import differentiable_quantization

    student = {**STUDENT, "dropout_rate": 0.3}
    train = {"epochs": 1, "batch_size": 16, "lr": 1e-4, "optimizer": "sgd", "momentum": 0.0, "nesterov": False,
             "schedule": "constant", "weight_decay": 0.0, "grad_clip": 5.0, "restarts": 0, "augment": False,
             "compile": False, "epoch_examples": None, "loss_reduction": "sentence_sum"}
    quant = {"policy": "all", "keep_first_last": True, "biases": True, "norm": True, "embeddings": True,
             "rounding": "deterministic"}
    options = {"init": "quantiles", "redistribute_bits": True, "grad_batches": 1, "use_distillation": False,
               "distill_from": "self", "redistribute_from": "training"}
    spec_ = {"run": "tiny/dq/seed0", "seed": 0, "kind": "translation", "model": student, "train": train,
             "quant": quant, "evaluation": EVAL, "threads": 1,
             "method": {"name": "dq", "bits": 2, "bucket_size": 256, "options": options}}
    task = Translation(spec_, folder, CPU)
    torch.manual_seed(0)
    source = task.new_model(student).eval()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        result = differentiable_quantization(RunContext(spec_, task, CPU, tmp_path / str(global_seed), source=source))
        runs.append((result.extra["dq_points_per_tensor"], {k: v.clone() for k, v in result.model.state_dict().items()}))
    assert runs[0][0] == runs[1][0] and sum(runs[0][0]) == 4 * len(runs[0][0])
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())


# ---- the NMT paper presets run the official recipe (items 2, 3, 4 and 11)
@pytest.mark.parametrize("preset", ["onmt-integ", "wmt13"])
def test_nmt_presets_train_fp_runs_on_the_official_sentence_sum(preset):
    specs = _specs(preset)
    trained = [s for s in specs.values() if "train" in s]
    assert any(s["role"] == "teacher" for s in trained) and any("/fp/" in s["run"] for s in trained)
    assert all(s["train"].get("loss_reduction") == "sentence_sum" for s in trained)
    assert all(s["distill"]["reduction"] == "sentence_sum" for s in specs.values() if "distill" in s)


def test_onmt_integ_dq_trains_on_plain_nll_with_official_gradient_norms():
    dq = [s for s in _specs("onmt-integ").values() if "/dq/" in s["run"]]
    assert dq and all("distill" not in s and not s["method"]["options"]["use_distillation"] for s in dq)
    assert all(s["method"]["options"]["redistribute_from"] == "training" for s in dq)
    assert all(s["method"]["options"]["grad_batches"] == 1 for s in dq)


def test_wmt13_pm_quantizes_every_parameter_and_qd_quantizes_every_tensor_at_the_end():
    specs = _specs("wmt13")
    pm = [s for s in specs.values() if "/pm/" in s["run"]]
    qd = [s for s in specs.values() if "/qd/" in s["run"]]
    assert pm and all(s["quant"]["policy"] == "all" for s in pm)  # QUANTIZE_FIRST_LAST_LAYER = True
    assert qd and all(s["quant"]["policy"] == "paper_index" for s in qd)  # trained with index 0 and last in fp32
    assert all(s["method"]["options"]["final_quantize_all"] is True for s in qd)  # ... quantized at the end
