"""Compression methods. Each is a function ``method(ctx: RunContext) -> RunResult``.

Built-ins (``qd.methods.registry.BUILTIN``): ``fp`` and ``distill`` (full-precision students),
``pm`` (post-training quantization), ``qt`` (quantized training without a teacher), ``qd``
(quantized distillation, Algorithm 1) and ``dq`` (differentiable quantization, Algorithm 2).
"""
from __future__ import annotations

import importlib


def load_method(entry: str):
    """The function an entry point ``'package.module:function'`` names."""
    module_name, _, func = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"method entry {entry!r}: cannot import module {module_name!r} ({e})") from e
    if not hasattr(module, func):
        raise ImportError(f"method entry {entry!r}: module {module_name!r} has no function {func!r}")
    return getattr(module, func)
