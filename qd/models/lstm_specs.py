"""The paper's seq2seq LSTM sizes and their parameter counts (torch-free: the workflow reads the names).

Teacher 2+2 layers of 500 units, students 1+1 layers of 512 / 256 / 128 units, word embeddings of
500 on both sides (``onmt/standard_options.py`` of the official code, notes 2.5). The config's
``models.architectures`` may override any of ``layers``, ``hidden``, ``embed`` per model name.

:func:`lstm_parameter_count` is the closed form of the OpenNMT-py architecture (encoder LSTM,
input-feeding decoder LSTM, Luong "general" attention without biases, generator with bias, separate
source and target embeddings); fairseq's ``lstm`` built by :mod:`qd.models.seq2seq` has exactly these
tensors (``tests/test_translation_model.py`` checks both against hand counts).

Try: ``python -m qd.models.lstm_specs``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LSTMSpec:
    layers: int  # encoder layers = decoder layers
    hidden: int  # LSTM units (the OpenNMT rnn_size)
    embed: int  # word embedding size, source and target


LSTM_SPECS = {
    "teacher": LSTMSpec(2, 500, 500),
    "student1": LSTMSpec(1, 512, 500),
    "student2": LSTMSpec(1, 256, 500),
    "student3": LSTMSpec(1, 128, 500),
}
# the OpenNMT defaults the official code used for every model
DROPOUT_RATE = 0.3
INIT_RANGE = 0.1
# the paper's vocabularies: 50,000 words plus OpenNMT's specials (source <unk> <blank>; target also <s> </s>)
PAPER_VOCAB = {"source": 50_002, "target": 50_004}


def lstm_architecture(name: str, overrides: dict | None = None) -> LSTMSpec:
    """The table entry ``name`` with ``overrides`` (``layers``/``hidden``/``embed``) applied."""
    overrides = dict(overrides or {})
    if name not in LSTM_SPECS and not {"layers", "hidden", "embed"} <= overrides.keys():
        raise ValueError(f"model {name!r} is not in the LSTM table ({', '.join(LSTM_SPECS)}); give layers, "
                         "hidden and embed for it under models.architectures")
    base = LSTM_SPECS.get(name, LSTMSpec(1, 1, 1))
    unknown = overrides.keys() - {"layers", "hidden", "embed"}
    if unknown:
        raise ValueError(f"models.architectures.{name}: unknown keys {sorted(unknown)}")
    return LSTMSpec(overrides.get("layers", base.layers), overrides.get("hidden", base.hidden),
                    overrides.get("embed", base.embed))


def _lstm_layer(inputs: int, hidden: int) -> int:
    # four gates, each with input and recurrent weights and two biases (PyTorch's b_ih and b_hh)
    return 4 * hidden * (inputs + hidden) + 2 * 4 * hidden


def lstm_parameter_count(spec: LSTMSpec, src_vocab: int, tgt_vocab: int) -> int:
    """Parameters of the seq2seq model ``spec`` at the given vocabulary sizes."""
    h, e, n = spec.hidden, spec.embed, spec.layers
    embeddings = (src_vocab + tgt_vocab) * e
    encoder = _lstm_layer(e, h) + (n - 1) * _lstm_layer(h, h)
    decoder = _lstm_layer(e + h, h) + (n - 1) * _lstm_layer(h, h)  # layer 0 reads [embedding; input feed]
    attention = h * h + 2 * h * h  # score projection W_a, output projection W_c [context; state] -> h
    generator = h * tgt_vocab + tgt_vocab
    return embeddings + encoder + decoder + attention + generator


if __name__ == "__main__":
    for name in LSTM_SPECS:
        count = lstm_parameter_count(LSTM_SPECS[name], PAPER_VOCAB["source"], PAPER_VOCAB["target"])
        print(f"{name:9s} {LSTM_SPECS[name]}  {count:,} parameters ({count / 1e6:.2f}M)")
