"""Reading bundle.yaml: bounded safe YAML (sized before anything is constructed), a mapping."""
from __future__ import annotations

from pathlib import Path

import yaml

from .format import BUNDLE_FILE, MAX_YAML_BYTES, MAX_YAML_FLOW_OPENERS, MAX_YAML_NODES, BundleError, check_size


def _expanded_nodes(root) -> float:
    """How many nodes the YAML graph has once its aliases are expanded (counted, not expanded:
    each shared node once, so a billion-laughs document costs microseconds)."""
    memo: dict = {}

    def size(node, depth=0) -> float:
        if node is None:
            return 0
        key = id(node)
        if key in memo:
            return memo[key]
        if depth > 200:
            raise RecursionError('YAML nested more than 200 levels deep')
        memo[key] = 1  # (a cycle counts once)
        n = 1.0
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c, depth + 1) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        memo[key] = n
        return n
    return size(root)


# libyaml's safe loader when PyYAML was built with it: the same SafeConstructor (no Python objects
# from tags), 15x less time holding the GIL than the pure-Python one (0.5 vs 7.6 ms for a bundle.yaml).
# The followers validate on a worker thread next to a control loop; pure-Python parsing there
# starved the loop (docs/reliability.md, bad bundles).
_SAFE_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


def _safe_load_bounded(text: str, where: Path):
    """yaml.safe_load(text), composed once: the node graph is sized (aliases counted, not expanded)
    before anything is constructed from it."""
    loader = _SAFE_LOADER(text)
    try:
        root = loader.get_single_node()
        nodes = _expanded_nodes(root)
        if nodes > MAX_YAML_NODES:
            raise BundleError('yaml', f'{where} expands to {nodes:.3g} YAML nodes through its '
                              f'aliases (more than {MAX_YAML_NODES}): an alias bomb, not a bundle description')
        return loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def parse_meta_file(path: Path) -> dict:
    """The mapping in the YAML file `path` (its size already checked); BundleError('yaml') otherwise."""
    try:
        text = path.read_text()
        # PyYAML's scanner is quadratic in flow nesting depth (20000 '[' took 20 s): bound the
        # openers first; a bundle.yaml has a few dozen.
        openers = text.count('[') + text.count('{')
        if openers > MAX_YAML_FLOW_OPENERS:
            raise BundleError('yaml', f'{path} has {openers} flow collections (more than '
                              f'{MAX_YAML_FLOW_OPENERS}): not a bundle description')
        meta = _safe_load_bounded(text, path)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError('yaml', f'{path} is not valid YAML: {str(e)[:300] or type(e).__name__}') from e
    if not isinstance(meta, dict):
        raise BundleError('yaml', f'{path} must hold a mapping, got {type(meta).__name__}')
    return meta


def read_bundle_meta(bundle_dir) -> dict:
    """bundle_dir/bundle.yaml as load_bundle reads it (size cap, bounded safe load, a mapping), with
    no other check: for tools that edit a bundle. BundleError when it cannot be read."""
    path = Path(bundle_dir) / BUNDLE_FILE
    if not path.is_file():
        raise BundleError('missing_file', f'{path} does not exist')
    check_size(path, MAX_YAML_BYTES)
    return parse_meta_file(path)
