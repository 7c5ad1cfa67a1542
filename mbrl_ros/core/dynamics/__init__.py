"""Probabilistic ensemble world model (PETS): torch model, training, ONNX export.

torch lives here only; nodes use `mbrl_ros.core.runtime` (onnxruntime) instead.
"""
from .ensemble import EnsembleConfig, ProbabilisticEnsemble  # noqa: F401
