"""The seq2seq LSTM (qd/models/seq2seq.py on fairseq's lstm): parameter counts, initialisation, and
quantization reaching its weights through the same policy, STE and artefact as the conv nets."""
from __future__ import annotations

import pytest
import torch

from qd.artefact import export_artefact, load_artefact
from qd.models.lstm_specs import LSTM_SPECS, PAPER_VOCAB, LSTMSpec, lstm_architecture, lstm_parameter_count
from qd.models.seq2seq import build_seq2seq, count_parameters
from qd.policy import QuantPolicy, quantized_names
from qd.quant import decode
from qd.ste import UniformQuantizer, quantized_forward

PAPER_META = {"src_vocab": PAPER_VOCAB["source"], "tgt_vocab": PAPER_VOCAB["target"], "pad": 1, "eos": 2, "bos": 0,
              "unk": 3}
SMALL_META = {**PAPER_META, "src_vocab": 23, "tgt_vocab": 19}


def small(layers=2, hidden=12, embed=10, **kw):
    torch.manual_seed(0)
    return build_seq2seq({"family": "lstm", "name": "tiny", "layers": layers, "hidden": hidden, "embed": embed,
                          "dropout_rate": 0.3, "init_range": 0.1, **kw}, SMALL_META)


def batch(seed=0, b=3, s=5, t=4):
    """fairseq-style inputs: left-padded sources sorted by decreasing length, ending with </s>."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(sorted(torch.randint(2, s + 1, (b,), generator=g).tolist(), reverse=True))
    lengths[0] = s
    src = torch.full((b, s), 1)
    for i, n in enumerate(lengths.tolist()):
        src[i, s - n:] = torch.randint(4, 23, (n,), generator=g)
        src[i, -1] = 2
    prev = torch.randint(4, 19, (b, t), generator=g)
    prev[:, 0] = 2
    return src, lengths, prev


# hand counts at the paper's vocabularies (source 50,002, target 50,004; embeddings 500):
#   embeddings       (50,002 + 50,004) x 500                          = 50,003,000
#   encoder layer    4h(in + h) + 8h          (in = 500, then h)
#   decoder layer 0  4h(500 + h + h) + 8h     (input feeding), then 4h(2h) + 8h
#   attention        h*h + 2h*h               (no biases)
#   generator        h * 50,004 + 50,004
# teacher h=500, 2 layers: 50,003,000 + 4,008,000 + 5,008,000 + 750,000 + 25,052,004 = 84,821,004
# student1 h=512: 50,003,000 + 2,076,672 + 3,125,248 + 786,432 + 25,652,052 = 81,643,404
# student2 h=256: 50,003,000 + 776,192 + 1,038,336 + 196,608 + 12,851,028 = 64,865,164
# student3 h=128: 50,003,000 + 322,560 + 388,096 + 49,152 + 6,450,516 = 57,213,324
PAPER_COUNTS = {"teacher": 84_821_004, "student1": 81_643_404, "student2": 64_865_164, "student3": 57_213_324}


@pytest.mark.parametrize("name", list(PAPER_COUNTS))
def test_parameter_counts_at_paper_vocabularies(name):
    spec = LSTM_SPECS[name]
    assert lstm_parameter_count(spec, PAPER_VOCAB["source"], PAPER_VOCAB["target"]) == PAPER_COUNTS[name]
    with torch.device("meta"):  # shapes only: no 85M-parameter allocation and initialisation
        model = build_seq2seq({"family": "lstm", "name": name}, PAPER_META)
    assert count_parameters(model) == PAPER_COUNTS[name]


@pytest.mark.parametrize("layers,hidden,embed", [(1, 7, 5), (3, 6, 9), (2, 16, 16)])
def test_closed_form_count_matches_the_model(layers, hidden, embed):
    model = small(layers, hidden, embed)
    assert count_parameters(model) == lstm_parameter_count(LSTMSpec(layers, hidden, embed), 23, 19)


def test_architecture_table_and_overrides():
    assert lstm_architecture("student2") == LSTMSpec(1, 256, 500)
    assert lstm_architecture("student2", {"hidden": 64, "embed": 32}) == LSTMSpec(1, 64, 32)
    with pytest.raises(ValueError, match="not in the LSTM table"):
        lstm_architecture("student9")
    with pytest.raises(ValueError, match="unknown keys"):
        lstm_architecture("teacher", {"width": 2})


def test_fairseq_tensors_are_the_opennmt_ones():
    model = small(layers=2, hidden=12, embed=10)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["encoder.embed_tokens.weight"] == (23, 10) and shapes["decoder.embed_tokens.weight"] == (19, 10)
    assert shapes["decoder.layers.0.weight_ih"] == (48, 10 + 12)  # input feeding: [embedding; attentional output]
    assert shapes["decoder.layers.1.weight_ih"] == (48, 12)
    assert shapes["decoder.attention.input_proj.weight"] == (12, 12)  # Luong general: W_a
    assert shapes["decoder.attention.output_proj.weight"] == (12, 24)  # W_c [context; h_t]
    assert "decoder.attention.input_proj.bias" not in shapes and "decoder.attention.output_proj.bias" not in shapes
    assert shapes["decoder.fc_out.weight"] == (19, 12) and shapes["decoder.fc_out.bias"] == (19,)
    assert not any("encoder_hidden_proj" in n or "additional_fc" in n for n in shapes)


def test_uniform_init_and_zero_padding_rows():
    model = small(init_range=0.05)
    for name, p in model.named_parameters():
        assert p.abs().max() <= 0.05, name
    assert model.encoder.embed_tokens.weight[1].abs().sum() == 0
    assert model.decoder.embed_tokens.weight[1].abs().sum() == 0
    assert model.decoder.layers[0].weight_hh.std() > 0.05 / 3  # filled, not left at fairseq's own init


def test_forward_shapes_and_eval_determinism():
    model = small().eval()
    src, lengths, prev = batch()
    logits, attention = model(src, lengths, prev)
    assert logits.shape == (3, 4, 19) and attention.shape == (3, 4, 5)
    # attention is a distribution over each sentence's real source positions only; the encoder turns
    # fairseq's left padding into right padding, so position p is the sentence's p-th token
    assert torch.allclose(attention.sum(-1), torch.ones(3, 4))
    beyond = torch.arange(5)[None, None, :] >= lengths[:, None, None]
    assert beyond.any() and attention[beyond.expand_as(attention)].abs().max() == 0
    assert torch.equal(model(src, lengths, prev)[0], logits)


def test_source_padding_does_not_change_a_sentence_output():
    """Left padding is packed away in the encoder and masked in the attention."""
    model = small().eval()
    src, lengths, prev = batch(b=3, s=6)
    logits = model(src, lengths, prev)[0]
    alone = model(src[2:, 6 - lengths[2]:], lengths[2:], prev[2:])[0]
    assert torch.allclose(alone[0], logits[2], atol=1e-6)


# ------------------------------------------------------------------------------------------ quantization


def test_policy_reaches_lstm_embeddings_and_generator():
    model = small()
    names = [n for n, _ in model.named_parameters()]
    assert quantized_names(model, QuantPolicy("all")) == names
    # the official parameter-index rule: the source embedding (first) and the generator bias (last) stay fp32
    paper = quantized_names(model, QuantPolicy("paper_index"))
    assert set(names) - set(paper) == {"encoder.embed_tokens.weight", "decoder.fc_out.bias"}
    modules = quantized_names(model, QuantPolicy("modules", keep_first_last=True))
    assert set(names) - set(modules) == {"encoder.embed_tokens.weight", "decoder.fc_out.weight", "decoder.fc_out.bias"}
    assert "encoder.lstm.weight_ih_l0" in modules and "decoder.layers.1.weight_hh" in modules
    no_emb = quantized_names(model, QuantPolicy("modules", keep_first_last=False, embeddings=False, biases=False))
    assert not any("embed_tokens" in n or ".bias" in n for n in no_emb) and "decoder.fc_out.weight" in no_emb


def test_quantized_forward_substitutes_every_lstm_weight_and_passes_gradients():
    model = small().train(False)
    src, lengths, prev = batch()
    quantizer = UniformQuantizer(bits=2, bucket_size=16)
    names = quantized_names(model, QuantPolicy("all"))
    out = quantized_forward(model, {n: quantizer for n in names}, src, lengths, prev)[0]
    # the same model with the quantized values copied in gives the same output, bit for bit
    loaded = small().train(False)
    with torch.no_grad():
        for (n, p), q in zip(loaded.named_parameters(), model.parameters()):
            p.copy_(quantizer(q))
    ref = loaded(src, lengths, prev)[0]
    assert torch.equal(out, ref)
    assert not torch.allclose(out, model(src, lengths, prev)[0])  # 2 bits: the substitution did something
    # straight-through: the full-precision weights receive d loss / d Q(w)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-6), n
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_lstm_artefact_round_trip_is_bit_exact(tmp_path):
    model = small().eval()
    quantizer = UniformQuantizer(bits=4, bucket_size=32)
    params = dict(model.named_parameters())
    names = quantized_names(model, QuantPolicy("paper_index"))
    codes = {n: quantizer.encode(params[n].detach()) for n in names}
    with torch.no_grad():
        for n in names:
            params[n].copy_(decode(codes[n]))
    header = {"model": {"family": "lstm", "name": "tiny", "layers": 2, "hidden": 12, "embed": 10},
              "model_meta": SMALL_META}
    export_artefact(tmp_path / "m.qda", model.state_dict(), codes, header)
    state, loaded_codes, loaded_header = load_artefact(tmp_path / "m.qda")
    assert loaded_header == header and set(loaded_codes) == set(names)
    for n, t in model.state_dict().items():
        assert torch.equal(state[n], t), n
    for n in names:
        assert torch.equal(loaded_codes[n].indices, codes[n].indices)
        assert torch.equal(decode(loaded_codes[n]), params[n].detach())
    rebuilt = build_seq2seq(header["model"], header["model_meta"])
    rebuilt.load_state_dict(state)
    src, lengths, prev = batch()
    assert torch.equal(rebuilt.eval()(src, lengths, prev)[0], model(src, lengths, prev)[0])
