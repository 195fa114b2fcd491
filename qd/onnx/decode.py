"""Greedy decoding of one source sentence, in PyTorch and with the exported encoder and decoder step.

Both decoders follow one rule: start from ``</s>`` (fairseq's first target token), feed back the
highest-scoring word at each step (padding never chosen; the lowest id wins a tie, as ``argmax`` does
in both libraries), stop after ``</s>`` or ``max_len`` words; the result is the words without ``</s>``.
:func:`torch_greedy` runs the fairseq model itself with its incremental state, so a difference between
the two is a difference of the exported graphs, not of two re-implementations of the search.

Greedy decoding, not the beam search the task's BLEU uses: the point is to compare the exported
computation with PyTorch's on whole output sequences, and every step of a greedy search depends on
the previous step's argmax, so one diverging logit changes the rest of the sentence.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

MAX_LEN = 100  # the task's default decode_max_length (beam search's max_len_b)


@torch.inference_mode()
def torch_greedy(model: nn.Module, src: torch.Tensor, max_len: int = MAX_LEN) -> list[int]:
    """Greedy translation of ``src`` (word ids ending with ``</s>``) by the fairseq model ``model``."""
    model.eval()
    eos, pad = model.decoder.dictionary.eos(), model.decoder.dictionary.pad()
    src = src.reshape(1, -1)
    encoder_out = model.encoder(src, torch.tensor([src.shape[1]]))
    state: dict = {}
    prev = torch.tensor([[eos]])
    words: list[int] = []
    for _ in range(max_len):
        logits = model.decoder(prev, encoder_out, incremental_state=state)[0][0, -1].clone()
        logits[pad] = -torch.inf
        word = int(logits.argmax())
        if word == eos:
            break
        words.append(word)
        prev = torch.cat([prev, torch.tensor([[word]])], dim=1)
    return words


def onnx_greedy(encoder, decoder, src: np.ndarray, eos: int, pad: int, max_len: int = MAX_LEN) -> list[int]:
    """Greedy translation of ``src`` with onnxruntime sessions of the exported ``encoder`` and ``decoder``."""
    encoder_out, hiddens, cells = encoder.run(None, {"src_tokens": np.asarray(src, np.int64).reshape(1, -1)})
    feed = np.zeros((1, hiddens.shape[-1]), np.float32)
    word, words = eos, []
    for _ in range(max_len):
        logits, hiddens, cells, feed = decoder.run(None, {
            "token": np.asarray([word], np.int64), "hiddens": hiddens, "cells": cells, "input_feed": feed,
            "encoder_out": encoder_out})
        logits = logits[0].copy()
        logits[pad] = -np.inf
        word = int(logits.argmax())
        if word == eos:
            break
        words.append(word)
    return words
