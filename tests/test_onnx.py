"""ONNX export (qd/onnx): each layout's integers decode to qd's weights, the exported classifier and
translation model predict what PyTorch predicts, the file's size is the stored width's, and the
integer path keeps the artefact's 8-bit codes.

Round trips compare onnxruntime's output of the decoding nodes alone with ``qd.quantizers.layouts.decode``:
bit for bit where ONNX computes qd's arithmetic (integer levels, codebooks), within the rounding bound
of ``qd/onnx/weights.py`` where it does not (min-max buckets). Models are small and random (or trained
for a few steps): the point is the same computation on both sides, not a good model.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from qd.artefact import export_artefact
from qd.models import build_model
from qd.onnx import (OnnxExportError, export_onnx, integer_onnx, onnx_agreement, onnx_files, onnx_latency,
                     ort_session, per_channel_8bit)
from qd.onnx.decode import onnx_greedy, torch_greedy
from qd.onnx.weights import encode_tensor, required_opset
from qd.quant import encode_nonuniform, encode_uniform, quantile_points
from qd.quantizers.layouts import decode, encode_codebook, integer_codes
from qd.quantizers.per_channel import PerChannelQuantizer
from qd.tasks.classification import Classification
from qd.tasks.translation import Translation
from qd.text.prepare import prepare_translation
from test_translation_data import spec, tiny_splits, write_multi30k

CONVNET = {"family": "convnet", "name": "student3", "width": 0.25, "logits_relu": False, "dropout": False}
DIGITS_META = {"in_channels": 1, "num_classes": 10, "image_size": 8}
DIGITS = {"kind": "classification", "name": "digits", "split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.2,
          "train_limit": None}
LSTM = {"family": "lstm", "name": "tiny", "layers": 1, "hidden": 32, "embed": 16, "dropout_rate": 0.0,
        "init_range": 0.1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def onnx_decoded(codes, opset: int = 25) -> tuple[np.ndarray, dict]:
    """The tensor ``w`` as onnxruntime computes it from the stored codes alone, and its description."""
    enc = encode_tensor("w", codes, opset)
    out = helper.make_tensor_value_info("w", TensorProto.FLOAT, list(codes.shape))
    model = helper.make_model(helper.make_graph(enc.nodes, "decode", [], [out], enc.initializers),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString()).run(None, {})[0], enc.info


def ulps_apart(got: np.ndarray, codes) -> float:
    """The largest difference from qd's decoding, in ulps of its bucket's largest magnitude."""
    n, d = codes.indices.numel(), codes.bucket_size or codes.indices.numel()
    ref = decode(codes).numpy().reshape(-1)
    m = np.maximum(np.abs(codes.lo.numpy()), np.abs(codes.hi.numpy())).astype(np.float32)
    ulp = np.repeat(np.spacing(m), d)[:n]
    return float((np.abs(got.reshape(-1) - ref) / ulp).max())


# ------------------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("bits,container,width", [(2, "uint2", 2), (4, "uint4", 4), (8, "uint8", 8),
                                                  (10, "uint16", 16)])
@pytest.mark.parametrize("bucket", [256, None])
def test_minmax_uniform_buckets_decode_to_qd_weights_within_the_rounding_bound(bits, container, width, bucket):
    torch.manual_seed(bits)
    w = torch.randn(37, 29) * 0.1  # 1073 elements: the last bucket of 256 is short (49 elements)
    codes = encode_uniform(w, bits, bucket)
    got, info = onnx_decoded(codes)
    assert ulps_apart(got, codes) <= 6  # the bound derived in qd/onnx/weights.py
    assert info["container"] == container and info["layout"] == "minmax"
    if bucket:
        assert (info["groups"], info["block_size"], info["padding"]) == ("blocks", 256, 5 * 256 - 1073)
    else:
        assert info["groups"] == "tensor"
    # the indices are packed at the container's width: a 2-bit weight takes 2 bits of the file
    stored = 1280 if bucket else 1073
    assert info["index_bytes"] == math.ceil(stored * width / 8)


def test_non_uniform_points_decode_through_a_lookup():
    torch.manual_seed(0)
    w = torch.randn(4096) * 0.05
    codes = encode_nonuniform(w, quantile_points(w, 16, 256), 256)
    got, info = onnx_decoded(codes)
    assert ulps_apart(got, codes) <= 3
    assert info["ops"] == "Gather + Mul + Add" and info["container"] == "uint4"


@pytest.mark.parametrize("bits", [4, 8])
def test_per_channel_affine_codes_decode_bit_for_bit_along_the_axis(bits):
    torch.manual_seed(1)
    codes = PerChannelQuantizer(bits).encode(torch.randn(8, 3, 3, 3))
    got, info = onnx_decoded(codes)
    assert np.array_equal(got, decode(codes).numpy())  # (q - zero_point) * scale: qd's arithmetic
    assert (info["groups"], info["axis"], info["layout"]) == ("axis", 0, "affine")


def test_affine_codes_along_another_axis_and_step_codes_in_blocks_are_exact():
    torch.manual_seed(2)
    scale = torch.rand(5) * 0.1 + 0.01
    levels = torch.randint(0, 16, (3, 5, 4))
    along = integer_codes(levels, scale, torch.randint(0, 16, (5,), dtype=torch.int32), 0, 15, (3, 5, 4),
                          torch.float32, axis=1)
    got, info = onnx_decoded(along)
    assert np.array_equal(got, decode(along).numpy()) and (info["groups"], info["axis"]) == ("axis", 1)
    # LSQ-style step codes: signed levels -8..7, a step per bucket of 16, no zero point of their own
    signed = torch.randint(-8, 8, (50,))
    step = integer_codes(signed, torch.rand(4) * 0.1 + 0.01, None, -8, 7, (50,), torch.float32, bucket_size=16)
    got, info = onnx_decoded(step)
    assert np.array_equal(got, decode(step).numpy()) and (info["groups"], info["padding"]) == ("blocks", 14)


def test_codebook_codes_decode_bit_for_bit():
    codes = encode_codebook(torch.randn(6, 7), torch.tensor([-0.5, -0.1, 0.0, 0.2, 0.9]))
    got, info = onnx_decoded(codes)
    assert np.array_equal(got, decode(codes).numpy()) and info["ops"] == "Gather"


def test_two_bit_tensors_need_opset_25_or_take_four_bits_at_21():
    codes = encode_uniform(torch.randn(300), 2, 64)
    assert required_opset({"w": codes}) == 25 and required_opset({"w": encode_uniform(torch.randn(9), 4)}) == 21
    got, info = onnx_decoded(codes, opset=21)
    assert info["container"] == "uint4" and ulps_apart(got, codes) <= 6


def test_the_stored_size_is_the_fixed_width_formula_plus_a_few_hundred_bytes(tmp_path):
    """A 256x256 weight at 4 bits in buckets of 256 behind a MatMul: 32 kB of indices and 2 kB of
    scales. The rest of the file (names, three decoding nodes, the graph's input and output) does not
    grow with the tensor: 512 bytes bound it."""
    torch.manual_seed(3)
    codes = encode_uniform(torch.randn(256, 256), 4, 256)
    enc = encode_tensor("w", codes, 21)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])
    graph = helper.make_graph(enc.nodes + [helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                              enc.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    size = len(model.SerializeToString())
    analytic = 256 * 256 * 4 // 8 + 256 * 8  # the paper's formula at 4 bits per weight
    assert analytic <= size <= analytic + 512


# ------------------------------------------------------------------------------------------ classifier


def random_convnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(CONVNET, **DIGITS_META).eval()
    with torch.no_grad():  # BatchNorm statistics away from the identity, so that they matter
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def write_quantized(path, model, codes: dict, header: dict) -> None:
    """The artefact of ``model`` with ``codes`` for some of its tensors (their decoded values loaded)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update({name: decode(c) for name, c in codes.items()})
    export_artefact(path, state, codes, header)


def mixed_codes(model) -> dict:
    """Every layout in one model: min-max buckets (2 and 4 bits), non-uniform points, per-channel affine."""
    weights = [(n, p.detach()) for n, p in model.named_parameters() if p.dim() >= 2]
    vectors = [(n, p.detach()) for n, p in model.named_parameters() if p.dim() < 2]
    codes = {}
    for i, (name, p) in enumerate(weights):
        codes[name] = (encode_uniform(p, 4, 256), PerChannelQuantizer(8).encode(p),
                       encode_nonuniform(p, quantile_points(p, 8, 64), 64))[i % 3]
    for i, (name, p) in enumerate(vectors):
        codes[name] = (encode_uniform(p, 2, None), encode_uniform(p, 4, 256))[i % 2]
    return codes


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    Classification.prepare(DIGITS, folder)
    return folder


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classifier")
    model = random_convnet()
    header = {"kind": "classification", "model": CONVNET, "model_meta": DIGITS_META}
    write_quantized(tmp / "model.qda", model, mixed_codes(model), header)
    return tmp / "model.qda", export_onnx(tmp / "model.qda", tmp / "model.onnx")


def test_a_classifier_with_every_layout_exports_and_predicts_as_pytorch(classifier):
    from qd.run import model_from_artefact

    artefact, result = classifier
    model, codes, _ = model_from_artefact(artefact)
    assert result["opset"] == 25 and result["tensors"].keys() == codes.keys()
    assert {i["ops"] for i in result["tensors"].values()} == {"DequantizeLinear + Add", "Gather + Mul + Add",
                                                              "DequantizeLinear"}
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x).numpy()
    for fold in (False, True):
        session = ort_session(result["files"]["model"], fold_dequantize=fold)
        got = session.run(None, {"input": x.numpy()})[0]
        assert np.abs(got - expected).max() < 1e-4
        assert (got.argmax(1) == expected.argmax(1)).all()
        assert np.allclose(session.run(None, {"input": x[:1].numpy()})[0], got[:1], atol=1e-5)  # dynamic batch


def test_the_classifier_file_is_its_fixed_width_size_plus_its_graph(classifier):
    _, r = classifier
    graph = onnx.load(r["files"]["model"]).graph
    # beyond the fixed-width formula the file holds the graph: a name or two, an op type and a few
    # attributes or dims per node and initializer (150 bytes bound them), the padding of short last
    # buckets and the point tables; in a model of 1,918 weights that is most of the file
    structure = 150 * (len(graph.node) + len(graph.initializer))
    assert r["size_fixed_width"] < r["size_onnx"] < r["size_fixed_width"] + structure
    assert r["size_analytic"] < r["size_qda"] and r["size_fixed_width"] < r["size_fp32"]


def test_agreement_and_latency_on_the_digits_test_split(classifier, digits):
    artefact, result = classifier
    row = onnx_agreement(artefact, result, digits)
    assert (row["n"], row["agreement"], row["disagreeing"]) == (359, 1.0, [])
    assert row["compared"] == "argmax class" and row["max_abs_logit_diff"] < 1e-4
    lat = onnx_latency(artefact, result["files"]["model"], warmup=1, repeats=3)
    assert lat["batch"] == 1 and lat["threads"] == 1 and lat["onnx_ms"] > 0 and lat["torch_ms"] > 0


def test_the_integer_path_keeps_the_artefacts_8_bit_codes(tmp_path, digits):
    model = random_convnet()
    codes = {n: PerChannelQuantizer(8).encode(p.detach()) for n, p in model.named_parameters() if p.dim() >= 2}
    assert per_channel_8bit(codes) and not per_channel_8bit({"w": encode_uniform(torch.randn(9), 8)})
    some_weight = next(iter(codes))
    bias = {"b": encode_uniform(torch.randn(9), 4, 256)}  # vectors may take any layout: their values are used
    assert per_channel_8bit({**codes, **bias})
    assert not per_channel_8bit({**codes, some_weight: encode_uniform(model.state_dict()[some_weight], 8, 256)})
    write_quantized(tmp_path / "pc8.qda", model, codes,
                    {"kind": "classification", "model": CONVNET, "model_meta": DIGITS_META})
    calibration = Classification.test_examples(digits)[0][:128]
    r = integer_onnx(tmp_path / "pc8.qda", tmp_path / "pc8.int8.onnx", calibration)
    assert r["integer_ops"] == {"QLinearConv": 4, "QGemm": 2} and r["kept_codes"] == sorted(codes)
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(r["files"]["model"]).graph.initializer}
    for name, c in codes.items():  # the integers in the file are the artefact's levels
        assert np.array_equal(stored[f"{name}_quantized"].reshape(-1), c.indices.numpy())
    row = onnx_agreement(tmp_path / "pc8.qda", r, digits)
    assert row["agreement"] >= 0.99  # 8-bit activations on top of the weights: close, not identical


def test_a_run_folder_is_exported_checked_and_read_by_the_summary_and_claim_5(tmp_path, digits):
    """``qd onnx`` on an 8-bit per-channel run: its record, the summary's columns from it, the latency
    job's columns, and claim 5's check run on onnxruntime's integer path (the stack named)."""
    from qd.onnx.run import integer_stack, onnx_latency_columns, onnx_run
    from qd.report.build import report_settings
    from qd.report.collect import onnx_columns
    from qd.report.integer import EMULATED, check_integer_model
    from qd.run import model_from_artefact

    run = tmp_path / "digits/student1/pcq/b8-channel/seed0"
    run.mkdir(parents=True)
    model = random_convnet()
    codes = {n: PerChannelQuantizer(8).encode(p.detach()) for n, p in model.named_parameters() if p.dim() >= 2}
    write_quantized(run / "model.qda", model, codes, {"kind": "classification", "model": CONVNET,
                                                      "model_meta": DIGITS_META, "run": "digits/student1/pcq/b8-channel/seed0"})
    record = onnx_run(run, digits, calibration=128)
    assert record["run"] == "digits/student1/pcq/b8-channel/seed0" and record["files"] == {"model": "model.onnx"}
    assert (record["agreement"]["n"], record["agreement"]["agreement"]) == (359, 1.0)
    assert record["integer"]["kept_codes"] == len(codes) and (run / "model.int8.onnx").exists()
    cols = onnx_columns(run / "onnx.json")
    assert cols == {"onnx_bytes": (run / "model.onnx").stat().st_size, "onnx_opset": record["opset"],
                    "onnx_agreement": 1.0, "onnx_compared": 359,
                    "onnx_integer_bytes": (run / "model.int8.onnx").stat().st_size,
                    "onnx_integer_agreement": record["integer"]["agreement"]["agreement"]}
    assert onnx_columns(tmp_path / "none.json") == {}

    x, y = Classification.test_examples(digits)
    logits, facts, stack = integer_stack(run, x)
    loaded, loaded_codes, _ = model_from_artefact(run / "model.qda")
    with torch.inference_mode():
        same = (logits.argmax(1) == loaded(x).argmax(1)).double().mean().item()
    assert same == pytest.approx(record["integer"]["agreement"]["agreement"])
    assert stack.startswith(f"onnxruntime {ort.__version__}") and "QLinearConv" in stack
    assert facts["integer_layers"] == sum(record["integer"]["integer_ops"].values()) == 6
    settings = report_settings(None)
    on_ort = check_integer_model(loaded, loaded_codes, x, y, settings, "r", None, 0, (logits, facts, stack))
    emulated = check_integer_model(loaded, loaded_codes, x, y, settings, "r", None, 0)
    assert on_ort.stack == stack and emulated.stack == EMULATED
    assert on_ort.integer_accuracy == pytest.approx(100 * (logits.argmax(1) == y).double().mean().item())
    assert on_ort.agreement == pytest.approx(same)

    lat = onnx_latency_columns(run, threads=1, warmup=1, repeats=3)
    assert lat["onnx_ms"] > 0 and lat["onnx_integer_ms"] > 0 and lat["onnx_batch"] == 1
    assert lat["onnx_integer_over_torch"] == pytest.approx(lat["onnx_integer_ms"] / lat["onnx_torch_ms"])
    assert "DequantizeLinear" in lat["onnx_stack"] and lat["onnx_integer_stack"] == stack


# ------------------------------------------------------------------------------------------ translation


@pytest.fixture(scope="module")
def translation(tmp_path_factory):
    """A tiny LSTM encoder-decoder trained 30 steps on a memorisable corpus, quantized to 4 bits."""
    tmp = tmp_path_factory.mktemp("translation")
    prepare_translation(spec(write_multi30k(tmp / "raw", tiny_splits(40, 6, 8))), tmp / "data")
    task = Translation({}, tmp / "data", torch.device("cpu"))
    torch.manual_seed(0)
    model = task.new_model(LSTM)
    opt = torch.optim.Adam(model.parameters(), 2e-2)
    batch = next(iter(task.eval_batches("train", 40)))
    for _ in range(30):
        loss = task.loss(model(*task.inputs(batch)), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    codes = {n: encode_uniform(p.detach(), 4, 64) for n, p in model.named_parameters()}
    header = {"kind": "translation", "model": LSTM, "model_meta": task.model_meta()}
    write_quantized(tmp / "model.qda", model, codes, header)
    return tmp / "model.qda", tmp / "data", export_onnx(tmp / "model.qda", tmp / "model.onnx")


def test_translation_exports_an_encoder_and_a_decoder_step(translation):
    artefact, _, r = translation
    assert r["files"] == {k: str(v) for k, v in onnx_files(artefact.parent / "model.onnx", "translation").items()}
    assert r["files"]["encoder"].endswith("model.encoder.onnx") and r["opset"] == 21
    encoder = onnx.load(r["files"]["encoder"])
    decoder = onnx.load(r["files"]["decoder"])
    assert [i.name for i in encoder.graph.input] == ["src_tokens"]
    assert [o.name for o in decoder.graph.output] == ["logits", "hiddens_out", "cells_out", "input_feed_out"]
    assert any(n.op_type == "LSTM" for n in encoder.graph.node)

    def dims(values, name):
        v = next(v for v in values if v.name == name)
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    # batch and lengths stay symbolic (torch.export would specialise an example's size-1 dimensions)
    assert dims(encoder.graph.input, "src_tokens") == ["batch", "length"]
    assert dims(encoder.graph.output, "encoder_out") == ["length", "batch", 32]
    assert dims(decoder.graph.input, "encoder_out") == ["source", "batch", 32]
    assert dims(decoder.graph.output, "logits")[0] == "batch"


def test_greedy_decoding_through_onnx_equals_pytorchs(translation):
    from qd.run import model_from_artefact
    from qd.text.prepare import PreparedText

    artefact, data, r = translation
    model, _, _ = model_from_artefact(artefact)
    sources = PreparedText.read(data).tokens["test"][0]
    enc, dec = ort_session(r["files"]["encoder"]), ort_session(r["files"]["decoder"])
    d = model.decoder.dictionary
    outputs = [torch_greedy(model, s, 30) for s in sources]
    assert outputs == [onnx_greedy(enc, dec, s.numpy(), d.eos(), d.pad(), 30) for s in sources]
    assert sum(map(len, outputs)) > len(outputs)  # real sentences, not just </s>
    row = onnx_agreement(artefact, r, data, max_len=30)
    assert (row["n"], row["agreement"], row["compared"]) == (8, 1.0, "greedy token sequence")


def test_torch_greedy_is_fairseqs_search_with_one_beam(translation):
    from fairseq.sequence_generator import SequenceGenerator

    from qd.run import model_from_artefact
    from qd.text.prepare import PreparedText

    artefact, data, _ = translation
    model, _, _ = model_from_artefact(artefact)
    d = model.decoder.dictionary
    generator = SequenceGenerator([model], d, beam_size=1, max_len_a=0, max_len_b=30)
    for src in PreparedText.read(data).tokens["test"][0][:4]:
        sample = {"net_input": {"src_tokens": src[None], "src_lengths": torch.tensor([len(src)])}}
        with torch.no_grad():
            hypo = generator.generate([model], sample)[0][0]["tokens"].tolist()
        assert torch_greedy(model, src, 30) == hypo[:-1]  # fairseq's hypothesis ends with </s>


# ------------------------------------------------------------------------------------------ errors


def test_bad_options_are_refused_with_their_reason(classifier, tmp_path):
    artefact, _ = classifier
    with pytest.raises(OnnxExportError, match="weights must be one of"):
        export_onnx(artefact, tmp_path / "m.onnx", weights="int3")
    with pytest.raises(OnnxExportError, match="opset 20 is too old"):
        export_onnx(artefact, tmp_path / "m.onnx", opset=20)
    with pytest.raises(OnnxExportError, match="not 'speech'"):
        onnx_files(tmp_path / "m.onnx", "speech")
    assert not (tmp_path / "m.onnx").exists()
