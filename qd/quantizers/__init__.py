"""Quantized codes beyond the paper's min-max buckets, and the quantizers that produce them.

* ``qd.quantizers.layouts``: :class:`QuantCodes` and its layouts (``minmax``, ``affine``, ``step``,
  ``codebook``), decoding, and the integer levels of affine codes;
* ``qd.quantizers.lsq``: learned step size quantization (LSQ, Esser et al. 2020);
* ``qd.quantizers.per_channel``: per-channel affine quantization-aware training with
  ``torch.fake_quantize_per_channel_affine``.

This package file imports nothing: ``qd.quant`` imports ``qd.quantizers.layouts``, and the quantizer
modules import ``qd.quant``.
"""
