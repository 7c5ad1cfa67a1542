"""Robot-side model runtime: onnxruntime inference and bundle validation. Never imports torch."""
from .bundle import BundleError, ModelBundle, load_bundle  # noqa: F401
from .ensemble import EnsembleRuntime  # noqa: F401
