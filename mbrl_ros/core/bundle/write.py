"""Writing bundle.yaml: one formatting, replaced atomically (a loader sees the old file or the new)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .format import BUNDLE_FILE, sha256_file
from .read import read_bundle_meta


def meta_text(meta: dict) -> str:
    """bundle.yaml's formatting (also for the reports beside it): keys in order, flow style for lists
    of numbers/names so limits and layouts stay one line each."""
    return yaml.safe_dump(meta, sort_keys=False, width=120, default_flow_style=None)


def write_bundle_meta(bundle_dir, meta: dict) -> Path:
    """Write `meta` as bundle_dir/bundle.yaml (no check: load_bundle validates). Returns its path."""
    path = Path(bundle_dir) / BUNDLE_FILE
    text = meta_text(meta)
    tmp = path.with_name(BUNDLE_FILE + '.tmp')
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def update_bundle_meta(bundle_dir, sections: dict, hash_files=()) -> dict:
    """Set the top-level `sections` of bundle_dir/bundle.yaml (each replaced whole; new ones go last)
    and record the current sha256 of the bundle files named in `hash_files` under `files`, in one
    atomic write. Returns the metadata written."""
    bundle_dir = Path(bundle_dir)
    meta = read_bundle_meta(bundle_dir)
    meta.update(sections)
    for name in hash_files:
        meta['files'][name] = {'sha256': sha256_file(bundle_dir / name)}
    write_bundle_meta(bundle_dir, meta)
    return meta
