"""Probabilistic ensemble world model (PETS): torch model, training, ONNX export.

torch lives here only (in the submodules; importing the package alone does not load it, so the CLI
can read `heads` without torch); nodes use `mbrl_ros.core.runtime` (onnxruntime) instead.
"""
