"""The model bundle format (`models/<name>/`): its one owner. No torch; YAML by safe loading only.

A bundle is a directory: bundle.yaml (the description, `format.check_schema`) + ensemble.onnx
[+ ensemble_partitioned.onnx, policy.onnx], each .onnx listed in bundle.yaml with its sha256
(docs/architecture.md, "Model bundle"). The package reads and writes bundle.yaml only through here:
- format: file names, size limits, BundleError and its checks, the schema, sha256_file, model roots;
- read: read_bundle_meta (the bounded YAML reader load_bundle uses, without the other checks);
- write: write_bundle_meta, update_bundle_meta (atomic), meta_text (its formatting);
- load: load_bundle (every check, then the onnxruntime sessions) -> ModelBundle.
"""
from .format import (BUNDLE_FILE, CHECKS, ENSEMBLE_FILE, MAX_ONNX_BYTES, MAX_YAML_BYTES, PARTITIONED_FILE,
                     POLICY_FILE, SCHEMA_VERSION, BundleError, check_schema, check_within_roots, resolved_roots,
                     sha256_file)
from .load import ModelBundle, load_bundle
from .read import read_bundle_meta
from .write import meta_text, update_bundle_meta, write_bundle_meta

__all__ = ['BUNDLE_FILE', 'CHECKS', 'ENSEMBLE_FILE', 'MAX_ONNX_BYTES', 'MAX_YAML_BYTES', 'PARTITIONED_FILE',
           'POLICY_FILE', 'SCHEMA_VERSION', 'BundleError', 'ModelBundle', 'check_schema', 'check_within_roots',
           'load_bundle', 'meta_text', 'read_bundle_meta', 'resolved_roots', 'sha256_file', 'update_bundle_meta',
           'write_bundle_meta']
