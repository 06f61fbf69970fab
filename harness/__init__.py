"""harness: a benchmarking and ablation harness for fast distillation of speech foundation models."""

__version__ = "0.1.0"
