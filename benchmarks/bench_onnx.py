"""The exported ONNX models against PyTorch: batch-1 latency side by side, and the file sizes.

Two students of the paper's CIFAR-10 conv-net family, random weights (latency does not depend on
their values): the demo's digits student (student 1 at width 0.25, 8x8x1 images) and the CIFAR-10
student 3 (111,935 parameters, 32x32x3). Run from the repository root::

    .venv/bin/python benchmarks/bench_onnx.py                # both models, under a minute
    .venv/bin/python benchmarks/bench_onnx.py --quick        # checks that it runs; numbers mean little
    .venv/bin/python benchmarks/bench_onnx.py --threads 2 --rounds 7
    .venv/bin/python benchmarks/bench_onnx.py --record       # also save benchmarks/results/onnx.json

Variants, each a batch-1 forward pass on the same input and the same number of threads
(``qd.onnx.measure``: onnxruntime's intra-op threads, PyTorch's ``set_num_threads``):

* ``PyTorch``: the model in eager PyTorch (fp32 arithmetic, whatever its weights);
* ``ORT fp32``: the exported graph with fp32 weights (``export_onnx(..., weights="fp32")``);
* ``ORT b-bit min-max``, b = 2 and 4, every parameter in buckets of 256 (the paper's quantizer): the
  dequantize-then-fp32 graph, with the weights dequantized at every run (the graph as written:
  onnxruntime keeps ``DequantizeLinear`` nodes) and once at load (``fold_dequantize``);
* ``ORT 8-bit per-channel``: conv and linear weights per output channel (``PerChannelQuantizer(8)``),
  biases and norms in fp32, as the dequantize-then-fp32 graph and as the integer path
  (``integer_onnx``: ``QLinearConv``/``QGemm`` on the artefact's own 8-bit codes, uint8 activations
  calibrated on 256 normal images).

Variants run in interleaved rounds (each round times every variant, ``--repeats`` passes after a
warm-up), and each ratio is the median of its per-round ratios, so other load hits all variants alike.
Sizes in bytes: the ONNX file, the ``.qda`` artefact (Huffman-coded), the paper's analytic size and the
same formula at the width ONNX stores each index in. Ratios only: no timed assertions. ``--record``
saves the ratios (no budgets) as the record that ``benchmarks/README.md`` is generated from.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from qd.artefact import export_artefact
from qd.latency import measure_latency
from qd.models import build_model
from qd.onnx import export_onnx, integer_onnx, ort_session
from qd.onnx.measure import OrtModule
from qd.quant import encode_uniform
from qd.quantizers.layouts import decode
from qd.quantizers.per_channel import PerChannelQuantizer

MODELS = {
    "digits student1 (width 0.25)": ({"family": "convnet", "name": "student1", "width": 0.25},
                                     {"in_channels": 1, "num_classes": 10, "image_size": 8}),
    "CIFAR-10 student3": ({"family": "convnet", "name": "student3", "width": 1.0},
                          {"in_channels": 3, "num_classes": 10, "image_size": 32}),
}
BUCKET = 256


def artefacts(folder: Path, spec: dict, meta: dict) -> dict[str, Path]:
    """The model as ``.qda`` files: fp32, min-max at 2 and 4 bits, 8-bit per channel."""
    torch.manual_seed(0)
    model = build_model(spec, **meta).eval()
    header = {"kind": "classification", "model": spec, "model_meta": meta}
    params = {n: p.detach() for n, p in model.named_parameters()}
    variants = {"fp32": {}, "2-bit": {n: encode_uniform(p, 2, BUCKET) for n, p in params.items()},
                "4-bit": {n: encode_uniform(p, 4, BUCKET) for n, p in params.items()},
                "8-bit per-channel": {n: PerChannelQuantizer(8).encode(p) for n, p in params.items() if p.dim() >= 2}}
    paths = {}
    for name, codes in variants.items():
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.update({n: decode(c) for n, c in codes.items()})
        paths[name] = folder / f"{name.replace(' ', '-')}.qda"
        export_artefact(paths[name], state, codes, header)
    return paths


def exports(folder: Path, qda: dict[str, Path], meta: dict) -> tuple[dict, dict]:
    """Variant label -> (ONNX file, fold the dequantization at load); and per ONNX file its artefact's
    name and its export description (sizes)."""
    described = {"ORT fp32": ("fp32", export_onnx(qda["fp32"], folder / "fp32.onnx", weights="fp32"))}
    files = {"ORT fp32": (described["ORT fp32"][1]["files"]["model"], False)}
    for bits in ("2-bit", "4-bit", "8-bit per-channel"):
        label = f"ORT {bits}" + (" min-max" if bits != "8-bit per-channel" else "")
        described[label] = (bits, export_onnx(qda[bits], folder / f"{bits.replace(' ', '-')}.onnx"))
        path = described[label][1]["files"]["model"]
        files[f"{label}, dequantize every run"] = (path, False)
        files[f"{label}, dequantized at load"] = (path, True)
    calibration = torch.randn(256, meta["in_channels"], meta["image_size"], meta["image_size"],
                              generator=torch.Generator().manual_seed(1))
    integer = integer_onnx(qda["8-bit per-channel"], folder / "8-bit-integer.onnx", calibration)
    label = "ORT 8-bit per-channel integer (" + "/".join(integer["integer_ops"]) + ")"
    described[label] = ("8-bit per-channel", integer)
    files[label] = (integer["files"]["model"], False)
    return files, described


def timed_rounds(modules: dict, x: torch.Tensor, threads: int, rounds: int, warmup: int, repeats: int) -> dict:
    """Label -> per-round medians (ms), the variants interleaved within each round."""
    times = {label: [] for label in modules}
    for _ in range(rounds):
        for label, module in modules.items():
            r = measure_latency(module, (x,), warmup=warmup, repeats=repeats, threads=threads)
            times[label].append(r["median_ms"])
    return times


def ratio(times: dict, label: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(times[label], times[base]))


def bench_model(name: str, spec: dict, meta: dict, args) -> list[dict]:
    spec = {**spec, "dropout": False}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        qda = artefacts(folder, spec, meta)
        files, described = exports(folder, qda, meta)
        torch.manual_seed(0)
        model = build_model(spec, **meta).eval()
        modules = {"PyTorch": model}
        for label, (path, fold) in files.items():
            modules[label] = OrtModule(ort_session(path, args.threads, fold))
        x = torch.randn(1, meta["in_channels"], meta["image_size"], meta["image_size"])
        times = timed_rounds(modules, x, args.threads, args.rounds, args.warmup, args.repeats)
        params = sum(p.numel() for p in model.parameters())
        print(f"\n{name}: {params:,} parameters, batch 1, {args.threads} thread(s), {args.rounds} rounds x "
              f"{args.repeats} passes")
        rows = print_latency(name, times, args.threads)
        print_sizes(described, qda)
        return rows


def print_latency(name: str, times: dict, threads: int) -> list[dict]:
    """The latency table; the record's rows (each variant over PyTorch)."""
    print(f"{'variant':62s} {'median ms':>9s} {'/ PyTorch':>9s} {'/ ORT fp32':>10s}")
    rows = []
    for label in times:
        ms = statistics.median(times[label])
        vs_torch, vs_fp32 = ratio(times, label, "PyTorch"), ratio(times, label, "ORT fp32")
        print(f"{label:62s} {ms:9.3f} {vs_torch:9.2f} {vs_fp32:10.2f}")
        for base, value in (("PyTorch", vs_torch), ("ORT fp32", vs_fp32)):
            if label not in ("PyTorch", base):
                rows.append({"what": f"{name}: {label} / {base} (batch 1, {threads} thread)", "value": value,
                             "unit": "x", "budget": None, "better": "lower", "digits": 2})
    return rows


def print_sizes(described: dict, qda: dict[str, Path]) -> None:
    """ONNX file, artefact, analytic (Huffman) and fixed-width sizes; the integer path has no formula."""
    print(f"{'file sizes (bytes)':62s} {'ONNX':>9s} {'.qda':>9s} {'analytic':>10s} {'fixed width':>11s}")
    for label, (artefact, d) in described.items():
        formula = [f"{d[k]:,.0f}" if k in d else "-" for k in ("size_analytic", "size_fixed_width")]
        print(f"{label:62s} {d['size_onnx']:9,d} {qda[artefact].stat().st_size:9,d} {formula[0]:>10s} "
              f"{formula[1]:>11s}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--only", choices=["digits", "cifar"], help="one model only")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 passes: checks that it runs")
    ap.add_argument("--record", action="store_true", help="save benchmarks/results/onnx.json (the README's)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.repeats = 2, 2, 5
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    rows = []
    for name, (spec, meta) in MODELS.items():
        if args.only and not name.lower().startswith(args.only):
            continue
        rows += bench_model(name, spec, meta, args)
    if args.record:
        from qd.report.benchmark import save_benchmark

        save_benchmark("onnx", __file__, argv, rows)


if __name__ == "__main__":
    main()
