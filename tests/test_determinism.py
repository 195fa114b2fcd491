"""Same spec, same data, same source model: the same run, bit for bit, whatever state the process's
global torch generator is in when the method starts.

A fresh process seeds torch's global CPU generator at random (``torch.initial_seed()`` differs per
process), and fairseq's LSTMs draw their dropout masks from it. ``ctx.new_model()`` seeds it with the
run's seed; the methods that start from a copy of the source student (``lsq``, ``dq``) must seed it
themselves, or their translation runs differ from process to process. Here the generator is set to
two different states before two runs of the same spec, as two fresh processes would find it.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from qd.methods.contract import RunContext
from qd.methods.differentiable_quantization import differentiable_quantization
from qd.methods.lsq import lsq
from qd.tasks.translation import Translation
from qd.text.prepare import prepare_translation
from test_translation_data import spec as data_spec, tiny_splits, write_multi30k
from test_translation import one_thread  # noqa: F401 - the module-wide single-thread fixture (autouse)

CPU = torch.device("cpu")
# dropout on, as in every translation preset: the masks are what an unseeded generator changes
STUDENT = {"family": "lstm", "name": "tiny", "layers": 1, "hidden": 32, "embed": 16, "dropout_rate": 0.3,
           "init_range": 0.1}
EVAL = {"batch_size": 64, "beam": 2, "decode_max_length": 20, "replace_unk": True}
DISTILL = {"temperature": 1.0, "weight": 0.7, "reduction": "token_mean", "mask_padding": True, "cache_topk": 0}
TRAIN = {"epochs": 1, "batch_size": 16, "lr": 1e-3, "optimizer": "adam", "schedule": "cosine", "weight_decay": 0.0,
         "grad_clip": 5.0, "restarts": 0, "augment": False, "compile": False, "epoch_examples": None}
QUANT = {"policy": "all", "keep_first_last": True, "biases": True, "norm": True, "embeddings": True,
         "rounding": "deterministic"}
METHODS = {
    "lsq_plain": (lsq, {"use_distillation": False, "step_granularity": "bucket", "symmetric": True,
                        "implementation": "torch", "step_lr": None}),
    "dq": (differentiable_quantization, {"init": "quantiles", "redistribute_bits": True, "grad_batches": 2,
                                         "use_distillation": True, "distill_from": "self"}),
}


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Translation:
    tmp = tmp_path_factory.mktemp("determinism")
    prepare_translation(data_spec(write_multi30k(tmp / "raw", tiny_splits(96, 8, 8))), tmp / "data")
    return Translation({"evaluation": EVAL, "distill": DISTILL}, tmp / "data", CPU)


@pytest.fixture(scope="module")
def source(task) -> torch.nn.Module:
    torch.manual_seed(0)
    return task.new_model(STUDENT).eval()


def run_once(name: str, task, source, run_dir: Path, global_seed: int) -> tuple[list[dict], dict]:
    method, options = METHODS[name]
    spec = {"run": f"tiny/{name}/seed0", "seed": 0, "kind": "translation", "model": STUDENT, "train": TRAIN,
            "quant": QUANT, "distill": DISTILL, "evaluation": EVAL, "threads": 1,
            "method": {"name": name, "bits": 2, "bucket_size": 256, "options": options}}
    ctx = RunContext(spec, task, CPU, run_dir, source=source)
    torch.manual_seed(global_seed)  # whatever a fresh process's generator happens to hold
    result = method(ctx)
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]
    return history, {k: v.detach().clone() for k, v in result.model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_translation_run_from_a_source_student_repeats_bit_for_bit(name, task, source, tmp_path):
    history_a, weights_a = run_once(name, task, source, tmp_path / "a", global_seed=1)
    history_b, weights_b = run_once(name, task, source, tmp_path / "b", global_seed=2)
    assert all(math.isfinite(row["train_loss"]) for row in history_a)
    assert history_a == history_b
    assert weights_a.keys() == weights_b.keys()
    differing = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert not differing, f"{name}: weights differ between two runs of one spec: {differing}"
