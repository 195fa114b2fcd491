"""Translation training speed: the suite's step against ``fairseq-train``, and distillation / QD epochs.

Design budgets: the suite's training throughput (target tokens per second) at least 0.9x
``fairseq-train``'s with the same architecture, batch and data; a distillation epoch at most 1.15x a
normal epoch of the same student; a QD epoch at most 1.10x a distillation epoch. Run from the
repository root::

    .venv/bin/python benchmarks/bench_translation.py                       # the numbers demo corpus
    .venv/bin/python benchmarks/bench_translation.py --data results/multi30k-cpu/multi30k/data \\
        --layers 1 --hidden 256 --embed 256 --steps 100
    .venv/bin/python benchmarks/bench_translation.py --record              # also saves its record

``--data`` is a prepared translation folder (``qd data`` or ``Translation.prepare``); without it the
numbers corpus is prepared into a temporary folder.

1. **fairseq-train**: ``fairseq-train <data> --arch lstm`` with the model's sizes, ``--batch-size``
   sentences, plain SGD (lr 1, gradient norm clipped at 5, the official NMT recipe), cross-entropy,
   ``--max-update`` steps, on the CPU with the same thread count; its throughput is the ``wps``
   (target tokens per second) fairseq logs for the epoch.
2. **suite**: the engine's step (``qd/train.py``: loss of the adapter's batch, ``loss.item()``,
   zero_grad, backward, clip, step) on ``Translation.train_batches`` (same data, same number of
   sentences per batch, fairseq's length-sorted order), timed over the same number of steps,
   batching included.
3. **epochs** of one student, in interleaved rounds of ``--round`` batches (the median of per-round
   ratios; load from other processes hits all variants alike):
   ``fp`` (token NLL), ``distill`` (teacher run every step, full distribution), ``distill-topk``
   (the teacher's top-k from the run's cache, filled beforehand: its one-off cost is printed as a
   share of an epoch), ``qd`` (``quantized_forward`` at 4 bits, bucket 256, every parameter, with the
   top-k teacher).
4. **top-k loss change**: the distillation loss with the cached top-k teacher against the full
   teacher, on the same batches (``--teacher-state``: a teacher ``state_dict`` saved with
   ``torch.save``; otherwise the teacher is trained for ``--teacher-steps`` steps here).

Ratios and throughputs only: nothing is asserted. ``--record`` saves the ratios, their budgets and the
top-k loss change as the record that ``benchmarks/README.md`` is generated from (``qd readme``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from qd.policy import QuantPolicy, quantized_names
from qd.ste import UniformQuantizer, quantized_forward
from qd.tasks.translation import TopK, Translation

CPU = torch.device("cpu")


def suite_step(task, model, optimizer, batch, loss_fn) -> float:
    """The engine's step (qd/train.py): loss, one .item(), zero_grad, backward, clip 5, step."""
    loss = loss_fn(batch)
    value = loss.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return value


def model_spec(args, hidden=None, layers=None) -> dict:
    return {"family": "lstm", "name": "bench", "layers": layers or args.layers, "hidden": hidden or args.hidden,
            "embed": args.embed, "dropout_rate": 0.3, "init_range": 0.1}


def suite_throughput(task, args) -> tuple[float, int]:
    torch.manual_seed(0)
    model = task.new_model(model_spec(args)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    batches = task.train_batches(args.batch, torch.Generator().manual_seed(0))
    tokens = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        b = next(batches)
        suite_step(task, model, optimizer, b, lambda b: task.loss(model(*task.inputs(b)), b))
        tokens += b["ntokens"]
    return tokens / (time.perf_counter() - start), tokens


def fairseq_throughput(data: Path, task, args) -> dict:
    exe = Path(sys.executable).parent / "fairseq-train"
    h, e, n = str(args.hidden), str(args.embed), str(args.layers)
    cmd = [str(exe), str(data), "--task", "translation", "--source-lang", task.source_lang, "--target-lang",
           task.target_lang, "--arch", "lstm", "--encoder-layers", n, "--decoder-layers", n,
           "--encoder-embed-dim", e, "--decoder-embed-dim", e, "--encoder-hidden-size", h,
           "--decoder-hidden-size", h, "--decoder-out-embed-dim", h, "--decoder-attention", "True",
           "--dropout", "0.3", "--optimizer", "sgd", "--lr", "1.0", "--clip-norm", "5", "--criterion",
           "cross_entropy", "--batch-size", str(args.batch), "--required-batch-size-multiple", "1",
           "--max-update", str(args.steps), "--cpu", "--num-workers", "0", "--no-save", "--disable-validation",
           "--log-format", "json", "--log-interval", str(args.steps), "--seed", "1", "--dataset-impl", "mmap"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq-train failed:\n{proc.stderr[-3000:]}")
    summaries = [json.loads(m) for m in re.findall(r"(\{\"epoch\".*\})", proc.stdout + proc.stderr)]
    last = [s for s in summaries if "train_wps" in s][-1]
    return {k: float(v) for k, v in last.items() if k in ("train_wps", "train_wpb", "train_bsz", "train_wall",
                                                           "train_num_updates")}


def epoch_ratios(task, args, teacher) -> dict:
    torch.manual_seed(0)
    student = task.new_model(model_spec(args, hidden=args.student_hidden, layers=1)).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    distill = {"temperature": 1.0, "weight": 0.7, "reduction": "sentence_sum", "mask_padding": True,
               "cache_topk": args.topk}
    full = {**distill, "cache_topk": 0}
    quantizer = UniformQuantizer(4, 256)
    names = quantized_names(student, QuantPolicy("all"))
    task.spec["distill"] = distill
    # the cache's one-off fill: the teacher over every training sentence once, timed
    start = time.perf_counter()
    for b in task.train_batches(args.batch, torch.Generator().manual_seed(99)):
        task.teacher_output(teacher, b)
    fill = time.perf_counter() - start

    def fp(b):
        return task.loss(student(*task.inputs(b)), b)

    def distilled(b):
        task.spec["distill"] = full
        out = task.distillation_loss(student(*task.inputs(b)), task.teacher_output(teacher, b), b, full)
        task.spec["distill"] = distill
        return out

    def distilled_topk(b):
        return task.distillation_loss(student(*task.inputs(b)), task.teacher_output(teacher, b), b, distill)

    def qd(b):
        out = quantized_forward(student, {n: quantizer for n in names}, *task.inputs(b))
        return task.distillation_loss(out, task.teacher_output(teacher, b), b, distill)

    variants = {"fp": fp, "distill": distilled, "distill-topk": distilled_topk, "qd": qd}
    times = {k: [] for k in variants}
    epoch = list(task.train_batches(args.batch, torch.Generator().manual_seed(0)))
    for r in range(args.rounds):
        chunk = [epoch[(r * args.round + i) % len(epoch)] for i in range(args.round)]
        for name, fn in variants.items():
            start = time.perf_counter()
            for b in chunk:
                suite_step(task, student, optimizer, b, fn)
            times[name].append(time.perf_counter() - start)
    per_batch = {k: statistics.median(v) / args.round for k, v in times.items()}

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    return {"per_batch_s": per_batch, "epoch_s": {k: v * len(epoch) for k, v in per_batch.items()},
            "cache_fill_s": fill, "cache_fill_share_of_fp_epoch": fill / (per_batch["fp"] * len(epoch)),
            # the same from the interleaved rounds (teacher forward = distill - distill-topk per batch),
            # less exposed to a change of load between the fill and the rounds
            "cache_fill_share_interleaved": (per_batch["distill"] - per_batch["distill-topk"]) / per_batch["fp"],
            "distill/fp": ratio("distill", "fp"), "distill-topk/fp": ratio("distill-topk", "fp"),
            "qd/distill-topk": ratio("qd", "distill-topk"), "qd/distill": ratio("qd", "distill")}


def train_teacher(task, args):
    torch.manual_seed(1)
    teacher = task.new_model(model_spec(args)).train()
    if args.teacher_state:
        teacher.load_state_dict(torch.load(args.teacher_state, weights_only=True))
        return teacher.eval()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(5)
    done = 0
    while done < args.teacher_steps:
        for b in task.train_batches(args.batch, g):
            suite_step(task, teacher, optimizer, b, lambda b: task.loss(teacher(*task.inputs(b)), b))
            done += 1
            if done == args.teacher_steps:
                break
    return teacher.eval()


def topk_loss_change(task, args, teacher) -> dict:
    """Relative change of the distillation loss (and of its KL term) when the teacher is cut to its top-k."""
    torch.manual_seed(3)
    student = task.new_model(model_spec(args, hidden=args.student_hidden, layers=1)).eval()
    base = {"temperature": 1.0, "weight": 0.7, "reduction": "sentence_sum", "mask_padding": True}
    rows = {"loss": [], "kl": []}
    with torch.no_grad():
        for i, b in enumerate(task.train_batches(args.batch, torch.Generator().manual_seed(7))):
            if i == 20:
                break
            out = student(*task.inputs(b))
            full_logits = teacher(*task.inputs(b))[0]
            vals, idx = full_logits.topk(args.topk, dim=-1)
            for key, weight in (("loss", 0.7), ("kl", 1.0)):
                d = {**base, "weight": weight}
                a = task.distillation_loss(out, full_logits, b, d).item()
                k = task.distillation_loss(out, TopK(vals, idx), b, d).item()
                rows[key].append((k - a) / a)
            probs = full_logits.softmax(-1).topk(args.topk, dim=-1).values.sum(-1)
            rows.setdefault("teacher_mass_in_topk", []).append(float(probs[b["target"].ne(task.pad)].mean()))
    return {k: statistics.mean(v) for k, v in rows.items()}


def row(what, value, unit="x", budget=None, better="lower", digits=2) -> dict:
    return {"what": what, "value": value, "unit": unit, "budget": budget, "better": better, "digits": digits}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a prepared translation folder (default: the numbers corpus)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=256)
    p.add_argument("--student-hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60, help="training steps for the throughput comparison")
    p.add_argument("--repeats", type=int, default=3, help="alternated fairseq-train / suite measurements")
    p.add_argument("--round", type=int, default=10, help="batches per round of the epoch comparison")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--teacher-steps", type=int, default=200)
    p.add_argument("--teacher-state", type=Path)
    p.add_argument("--skip", nargs="*", default=[], choices=["fairseq", "suite", "epochs", "topk"])
    p.add_argument("--record", action="store_true", help="save benchmarks/results/translation.json (the README's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp())
        data = tmp / "numbers"
        Translation.prepare({"name": "numbers", "pairs": 6000, "split_seed": 0, "val_fraction": 0.1,
                             "test_fraction": 0.2, "max_length": 50, "vocab_size": 50000}, data)
    records = []  # what was measured, for --record
    try:
        task = Translation({"evaluation": {"batch_size": 64}}, data, CPU)
        print(f"data {data}: {task.meta['sizes']}, vocab {task.meta['vocab']}; model {args.layers}x{args.hidden}, "
              f"embed {args.embed}, batch {args.batch} sentences, {args.threads} threads")
        if "fairseq" not in args.skip or "suite" not in args.skip:
            ratios = []
            for r in range(args.repeats):  # alternated, so a change of load hits both alike
                theirs = fairseq_throughput(data, task, args) if "fairseq" not in args.skip else None
                ours, tokens = suite_throughput(task, args) if "suite" not in args.skip else (None, 0)
                if theirs:
                    print(f"[{r + 1}] fairseq-train: {theirs['train_wps']:.0f} target tokens/s "
                          f"({theirs['train_num_updates']:.0f} updates, {theirs['train_wpb']:.1f} tokens per batch)")
                if ours:
                    print(f"[{r + 1}] suite step:    {ours:.0f} target tokens/s ({args.steps} steps, "
                          f"{tokens / args.steps:.1f} tokens per batch)")
                if theirs and ours:
                    ratios.append(ours / theirs["train_wps"])
            if ratios:
                print(f"suite / fairseq-train throughput: {statistics.median(ratios):.2f}x, median of "
                      f"{', '.join(f'{x:.2f}' for x in ratios)} (budget >= 0.9x)")
                records.append(row(f"suite / fairseq-train training throughput (median of {len(ratios)})",
                                   statistics.median(ratios), budget=0.9, better="higher"))
        if "epochs" not in args.skip or "topk" not in args.skip:
            teacher = train_teacher(task, args)
            if "topk" not in args.skip:
                change = topk_loss_change(task, args, teacher)
                print(f"top-{args.topk} teacher: distillation loss changes by {100 * change['loss']:+.3f} %, its KL "
                      f"term by {100 * change['kl']:+.3f} %; the teacher's top-{args.topk} hold "
                      f"{100 * change['teacher_mass_in_topk']:.2f} % of its probability")
                records += [row(f"distillation loss change with the top-{args.topk} teacher",
                                100 * change["loss"], "%", digits=3),
                            row(f"its KL term's change with the top-{args.topk} teacher", 100 * change["kl"], "%",
                                digits=3),
                            row(f"teacher probability in its top-{args.topk}", 100 * change["teacher_mass_in_topk"],
                                "%", better="higher")]
            if "epochs" not in args.skip:
                r = epoch_ratios(task, args, teacher)
                print("per batch (s): " + ", ".join(f"{k} {v:.4f}" for k, v in r["per_batch_s"].items()))
                print(f"distillation epoch / normal epoch: {r['distill/fp']:.2f}x with the teacher every step, "
                      f"{r['distill-topk/fp']:.2f}x with the cached top-{args.topk} (budget <= 1.15x); the cache's "
                      f"one-off fill: {r['cache_fill_s']:.1f} s = {r['cache_fill_share_of_fp_epoch']:.2f} of a "
                      f"normal epoch ({r['cache_fill_share_interleaved']:.2f} from the interleaved rounds)")
                print(f"QD epoch / distillation epoch: {r['qd/distill-topk']:.2f}x (both with the cached teacher; "
                      f"budget <= 1.10x); {r['qd/distill']:.2f}x against the uncached distillation epoch")
                # the budgets are the suite's epochs, which use the cache; the uncached ratios show its effect
                records += [row(f"distillation epoch (cached top-{args.topk}) / normal epoch", r["distill-topk/fp"],
                                budget=1.15),
                            row("distillation epoch (teacher every step) / normal epoch", r["distill/fp"]),
                            row("QD epoch / distillation epoch (both cached)", r["qd/distill-topk"], budget=1.10),
                            row("QD epoch (cached) / distillation epoch (teacher every step)", r["qd/distill"]),
                            row("the cache's one-off fill / normal epoch", r["cache_fill_share_of_fp_epoch"])]
        if args.record:
            from qd.report.benchmark import save_benchmark

            save_benchmark('translation', __file__, argv, records)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
