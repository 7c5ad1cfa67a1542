"""Robot-side model runtime: onnxruntime inference of the ensemble. Never imports torch.
Bundles are read and validated by mbrl_ros.core.bundle."""
from .ensemble import EnsembleRuntime  # noqa: F401
