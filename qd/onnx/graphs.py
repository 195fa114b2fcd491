"""The model's computation as ONNX graphs, traced by ``torch.onnx.export`` with its fp32 weights as
initializers under their state-dict names (``qd.onnx.weights`` then swaps the quantized ones).

* classification: one graph, ``input`` (batch, channels, height, width) -> ``logits`` (batch, classes),
  the batch dimension dynamic;
* translation (fairseq's LSTM encoder-decoder, ``qd.models.seq2seq``): two graphs, so a greedy decoder
  can drive them step by step (``qd.onnx.decode``):
  ``encoder``: ``src_tokens`` (batch, length) -> ``encoder_out`` (length, batch, hidden), ``hiddens``,
  ``cells`` (layers, batch, hidden): the source embedding and the LSTM over sentences without padding
  (one sentence, or several of one length: fairseq's packing of padded batches is not part of it);
  ``decoder``: one step of the input-feeding decoder, ``token`` (batch,), ``hiddens``, ``cells``,
  ``input_feed`` (batch, hidden), ``encoder_out`` -> ``logits`` (batch, vocabulary), ``hiddens_out``,
  ``cells_out``, ``input_feed_out``: fairseq's ``LSTMDecoder.extract_features`` for one position
  (embedding and input feed, the LSTM cells, Luong attention over the source, the output projection).

Graphs are traced at opset 21 with the ``torch.export``-based exporter (``dynamo=True``, needs
``onnxscript``) and without its graph optimiser, which folds parameters into new initializers and so
would lose the names the quantized weights are found by; onnxruntime optimises at load.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import onnx
import torch
import torch.nn as nn
from onnx import ModelProto

from qd.onnx.errors import OnnxExportError
from qd.onnx.weights import MIN_OPSET
from qd.tasks import DEFAULT_KIND

ENCODER_INPUTS, ENCODER_OUTPUTS = ["src_tokens"], ["encoder_out", "hiddens", "cells"]
DECODER_INPUTS = ["token", "hiddens", "cells", "input_feed", "encoder_out"]
DECODER_OUTPUTS = ["logits", "hiddens_out", "cells_out", "input_feed_out"]


def trace(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str],
          dynamic_shapes: tuple) -> ModelProto:
    """``module`` as an ONNX model at opset 21, parameters kept as named initializers."""
    module.eval()
    # the exporter reports its progress on stdout and warns about torch.export internals: neither is
    # the user's business when the export succeeds, and a failure raises with its own message
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=MIN_OPSET, optimize=False,
                                    verbose=False, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes)
    return program.model_proto


def declare_shape(model: ModelProto, output: str, dims: list) -> None:
    """Declare the shape of a graph output (``str`` entries are symbolic): where the tracer specialised a
    dimension the graph computes dynamically, its declared shape would be the example's."""
    out = next(o for o in model.graph.output if o.name == output)
    shape = out.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add().CopyFrom(onnx.TensorShapeProto.Dimension(**({"dim_param": d} if isinstance(d, str)
                                                                      else {"dim_value": d})))


def classification_graph(model: nn.Module, meta: dict) -> ModelProto:
    """The classifier ``input -> logits`` with a dynamic batch dimension."""
    # examples of batch 2 and lengths above 1 throughout: torch.export specialises dimensions of size 1
    example = torch.zeros(2, meta["in_channels"], meta["image_size"], meta["image_size"])
    batch = torch.export.Dim("batch")
    return trace(model, (example,), ["input"], ["logits"], ({0: batch},))


class SentenceEncoder(nn.Module):
    """fairseq's ``LSTMEncoder`` on sentences without padding: embedding, then the LSTM.

    With no padding, fairseq's packed sequence holds every position, so this is its computation."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, src_tokens: torch.Tensor):
        x = self.encoder.embed_tokens(src_tokens).transpose(0, 1)  # (length, batch, embed)
        outputs, (hiddens, cells) = self.encoder.lstm(x)
        return outputs, hiddens, cells


class DecoderStep(nn.Module):
    """One position of fairseq's ``LSTMDecoder`` (eval mode): the recurrent state in, the logits and the
    next state out. The state starts as the encoder's final hiddens and cells and a zero input feed."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, token, hiddens, cells, input_feed, encoder_out):
        d = self.decoder
        x = torch.cat((d.embed_tokens(token), input_feed), dim=1)  # input feeding
        new_hiddens, new_cells = [], []
        for i, cell in enumerate(d.layers):
            h, c = cell(x, (hiddens[i], cells[i]))
            new_hiddens.append(h)
            new_cells.append(c)
            x = h
        out, _ = d.attention(x, encoder_out, None)
        return d.fc_out(out), torch.stack(new_hiddens), torch.stack(new_cells), out


def check_translation_model(model: nn.Module) -> None:
    """The decoder step above is fairseq's computation only for the configuration ``qd`` builds."""
    enc, dec = model.encoder, model.decoder
    unsupported = [what for what, bad in (
        ("a bidirectional encoder", enc.bidirectional),
        ("decoder residuals", dec.residuals),
        ("a decoder without attention", dec.attention is None),
        ("projections of the encoder state", dec.encoder_hidden_proj is not None),
        ("an extra output projection", hasattr(dec, "additional_fc")),
        ("an adaptive softmax or shared output embedding", dec.adaptive_softmax is not None
         or dec.share_input_output_embed),
    ) if bad]
    if unsupported:
        raise OnnxExportError(f"ONNX export of the LSTM encoder-decoder does not handle {', '.join(unsupported)}")


def translation_graphs(model: nn.Module) -> dict[str, ModelProto]:
    """``{"encoder": ..., "decoder": ...}``: the encoder and one decoder step (see the module docstring)."""
    check_translation_model(model)
    layers, hidden = model.decoder.num_layers, model.decoder.hidden_size
    batch, length, source = torch.export.Dim("batch"), torch.export.Dim("length"), torch.export.Dim("source")
    src = torch.full((2, 3), model.encoder.padding_idx + 3, dtype=torch.long)  # any non-special word ids
    encoder = trace(SentenceEncoder(model.encoder), (src,), ENCODER_INPUTS, ENCODER_OUTPUTS,
                    ({0: batch, 1: length},))
    # the LSTM's output length is traced as the example's, though the ONNX LSTM computes any length
    declare_shape(encoder, "encoder_out", ["length", "batch", hidden])
    state = torch.zeros(layers, 2, hidden)
    step_args = (torch.zeros(2, dtype=torch.long), state, state.clone(), torch.zeros(2, hidden),
                 torch.zeros(3, 2, hidden))
    decoder = trace(DecoderStep(model.decoder), step_args, DECODER_INPUTS, DECODER_OUTPUTS,
                    ({0: batch}, {1: batch}, {1: batch}, {0: batch}, {0: source, 1: batch}))
    return {"encoder": encoder, "decoder": decoder}


def task_graphs(model: nn.Module, header: dict) -> dict[str, ModelProto]:
    """The graphs of an artefact's model by role: ``model`` (classification) or ``encoder`` and
    ``decoder`` (translation)."""
    kind = header.get("kind", DEFAULT_KIND)
    if kind == "classification":
        return {"model": classification_graph(model, header.get("model_meta", header.get("shape")))}
    if kind == "translation":
        return translation_graphs(model)
    raise OnnxExportError(f"ONNX export handles the classification and translation task kinds, not {kind!r}")
