"""The OpenNMT-style LSTM encoder-decoder of the paper's translation experiments, on fairseq's ``lstm``.

fairseq's ``LSTMModel`` (``LSTMEncoder`` + ``LSTMDecoder``) is the architecture of early OpenNMT-py
that the official code used: a unidirectional LSTM encoder, a decoder LSTM with input feeding
(layer 0 reads ``[word embedding; previous attentional output]``), Luong's "general" global
attention (``score = h_t^T W_a h_s``; output ``tanh(W_c [context; h_t])``, no biases), dropout on the
embeddings and between layers, and a generator ``Linear(hidden, target vocabulary)`` read through a
log-softmax. The decoder starts from the encoder's final states. The differences that remain are
listed in ``docs/translation.md``.

A model spec is ``{"family": "lstm", "name": ..., "layers", "hidden", "embed", "dropout_rate",
"init_range"}`` (missing sizes come from :data:`qd.models.lstm_specs.LSTM_SPECS`); the model meta
(``qd.tasks.translation.Translation.model_meta``) gives the vocabulary sizes and special indices.

The forward pass is ``model(src_tokens, src_lengths, prev_output_tokens) -> (logits, attention)``
with fairseq's batch conventions, and works through ``torch.func.functional_call`` (``qd.ste``): the
encoder's ``nn.LSTM`` reads its weights through ``_flat_weights``, which the substitution updates.

Try: ``python -m qd.models.seq2seq`` (parameter counts at the paper's vocabularies).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qd.text import import_fairseq

import_fairseq()
from fairseq.models.lstm import LSTMDecoder, LSTMEncoder, LSTMModel  # noqa: E402

from qd.models.lstm_specs import (  # noqa: E402
    DROPOUT_RATE,
    INIT_RANGE,
    LSTM_SPECS,
    PAPER_VOCAB,
    LSTMSpec,
    lstm_architecture,
)

# fairseq's default limit (1e5) is far above any sentence here; it only bounds SequenceGenerator
MAX_POSITIONS = 1024


class _Vocabulary:
    """What fairseq's encoder and decoder read of a dictionary: its size and special indices.

    A model is rebuilt from the artefact's model meta alone, without the dictionary files."""

    def __init__(self, size: int, pad: int, eos: int, bos: int, unk: int):
        self.size, self._pad, self._eos, self._bos, self._unk = size, pad, eos, bos, unk

    def __len__(self) -> int:
        return self.size

    def pad(self) -> int:
        return self._pad

    def eos(self) -> int:
        return self._eos

    def bos(self) -> int:
        return self._bos

    def unk(self) -> int:
        return self._unk


class Seq2Seq(LSTMModel):
    """fairseq's ``LSTMModel`` with the suite's metadata: its spec, and the first and last layer in
    forward order for the quantization policy (source embedding, generator)."""

    io_layers = ("encoder.embed_tokens", "decoder.fc_out")

    def __init__(self, encoder, decoder, spec: LSTMSpec):
        super().__init__(encoder, decoder)
        self.spec = spec


def architecture(model_spec: dict) -> LSTMSpec:
    sizes = {k: model_spec[k] for k in ("layers", "hidden", "embed") if k in model_spec}
    return lstm_architecture(model_spec["name"], sizes)


def build_seq2seq(model_spec: dict, model_meta: dict) -> Seq2Seq:
    """A freshly initialised model: every parameter uniform in ``[-init_range, init_range]`` (OpenNMT's
    ``param_init``), the padding rows of both embeddings then zeroed (fairseq's convention; padding
    positions never reach a loss, so this does not change what is learnt)."""
    spec = architecture(model_spec)
    dropout = model_spec.get("dropout_rate", DROPOUT_RATE)
    init_range = model_spec.get("init_range", INIT_RANGE)
    specials = {k: model_meta[k] for k in ("pad", "eos", "bos", "unk")}
    src = _Vocabulary(model_meta["src_vocab"], **specials)
    tgt = _Vocabulary(model_meta["tgt_vocab"], **specials)
    encoder = LSTMEncoder(src, embed_dim=spec.embed, hidden_size=spec.hidden, num_layers=spec.layers,
                          dropout_in=dropout, dropout_out=dropout, bidirectional=False, left_pad=True,
                          padding_idx=specials["pad"], max_source_positions=MAX_POSITIONS)
    decoder = LSTMDecoder(tgt, embed_dim=spec.embed, hidden_size=spec.hidden, out_embed_dim=spec.hidden,
                          num_layers=spec.layers, dropout_in=dropout, dropout_out=dropout, attention=True,
                          encoder_output_units=spec.hidden, share_input_output_embed=False,
                          adaptive_softmax_cutoff=None, max_target_positions=MAX_POSITIONS, residuals=False)
    model = Seq2Seq(encoder, decoder, spec)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-init_range, init_range)
        for emb in (model.encoder.embed_tokens, model.decoder.embed_tokens):
            emb.weight[emb.padding_idx].zero_()
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    meta = {"src_vocab": PAPER_VOCAB["source"], "tgt_vocab": PAPER_VOCAB["target"], "pad": 1, "eos": 2, "bos": 0,
            "unk": 3}
    for name in LSTM_SPECS:
        print(f"{name:9s} {count_parameters(build_seq2seq({'family': 'lstm', 'name': name}, meta)):,}")
