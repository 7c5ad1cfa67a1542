"""Distilled fast policy: DAgger distillation of the MPC (distill.py, torch), the policy network and
its ONNX export (network.py, torch), and the robot-side onnxruntime policy (runtime.py, no torch).

Import the torch parts explicitly (`from mbrl_ros.core.policy.distill import ...`): this package
import stays torch-free so nodes can use `PolicyRuntime`.
"""
from .runtime import PolicyError, PolicyRuntime

__all__ = ['PolicyError', 'PolicyRuntime']
