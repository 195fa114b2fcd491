"""qd-repro: a reproducibility suite for 'Model compression via distillation and quantization'."""
__version__ = "0.1.0"
