"""Transitions (s, a, s') for learning a world model, with episode ids so that a held-out
split never leaks a neighbouring transition of the same episode into training.

Convention (shared with dynamics/ and runtime/): s = [q, qd] (2*dof), a = effort command
(dof, Nm on top of gravity compensation), s' = the state one control period `dt` later.
Stored as .npz without pickles, so a robot can load it safely.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FORMAT_VERSION = 1


class DatasetError(ValueError):
    """A dataset whose arrays or metadata are inconsistent."""


class _hybridmethod:
    """`ds.concat(other, ...)` and `TransitionDataset.concat([a, b, ...])` both work."""

    def __init__(self, fn):
        self.fn = fn

    def __get__(self, obj, cls):
        def bound(*args, **kwargs):
            if obj is not None:
                args = (obj,) + args
            return self.fn(cls, *args, **kwargs)
        bound.__doc__ = self.fn.__doc__
        return bound


@dataclass
class TransitionDataset:
    states: np.ndarray          # (N, 2*dof) [q, qd]
    actions: np.ndarray         # (N, dof) effort command in force over [t, t+dt)
    next_states: np.ndarray     # (N, 2*dof) state at t+dt
    episode: np.ndarray         # (N,) int, contiguous runs of one episode
    dt: float
    joint_names: list[str]
    robot: str
    meta: dict = field(default_factory=dict)  # provenance: str -> str/float/int (exploration, seed, source)

    def __post_init__(self):
        self.states = np.ascontiguousarray(self.states, dtype=np.float64)
        self.actions = np.ascontiguousarray(self.actions, dtype=np.float64)
        self.next_states = np.ascontiguousarray(self.next_states, dtype=np.float64)
        self.episode = np.ascontiguousarray(self.episode, dtype=np.int64).reshape(-1)
        self.joint_names = [str(n) for n in self.joint_names]
        self.dt = float(self.dt)
        self.robot = str(self.robot)
        self.validate()

    # ---- shape contract ---------------------------------------------------------------
    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def state_dim(self) -> int:
        return 2 * self.dof

    @property
    def action_dim(self) -> int:
        return self.dof

    def validate(self) -> None:
        n, d = len(self.episode), self.dof
        if d == 0:
            raise DatasetError('joint_names is empty')
        for name, arr, width in (('states', self.states, 2 * d), ('actions', self.actions, d),
                                 ('next_states', self.next_states, 2 * d)):
            if arr.ndim != 2 or arr.shape != (n, width):
                raise DatasetError(f'{name} has shape {arr.shape}, expected ({n}, {width}) '
                                   f'for {d} joints')
            if not np.all(np.isfinite(arr)):
                raise DatasetError(f'{name} contains NaN or inf')
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise DatasetError(f'dt must be positive, got {self.dt}')

    def __len__(self) -> int:
        return len(self.episode)

    @property
    def deltas(self) -> np.ndarray:
        """s' - s: what the world model predicts."""
        return self.next_states - self.states

    @property
    def episode_ids(self) -> np.ndarray:
        return np.unique(self.episode)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ids)

    # ---- combining and splitting ------------------------------------------------------
    def subset(self, mask_or_index) -> 'TransitionDataset':
        idx = np.asarray(mask_or_index)
        return TransitionDataset(self.states[idx], self.actions[idx], self.next_states[idx],
                                 self.episode[idx], self.dt, self.joint_names, self.robot,
                                 dict(self.meta))

    @_hybridmethod
    def concat(cls, *datasets) -> 'TransitionDataset':
        """One dataset from several of the same robot, joints and dt; episode ids are
        renumbered so that episodes of different inputs stay distinct."""
        if len(datasets) == 1 and not isinstance(datasets[0], TransitionDataset):
            datasets = tuple(datasets[0])
        if not datasets:
            raise DatasetError('concat needs at least one dataset')
        first = datasets[0]
        for ds in datasets[1:]:
            if ds.joint_names != first.joint_names:
                raise DatasetError(f'cannot concat: joint names {ds.joint_names} != {first.joint_names}')
            if ds.robot != first.robot:
                raise DatasetError(f'cannot concat: robot {ds.robot!r} != {first.robot!r}')
            if not np.isclose(ds.dt, first.dt, rtol=0, atol=1e-9):
                raise DatasetError(f'cannot concat: dt {ds.dt} != {first.dt}')
        episodes, offset = [], 0
        for ds in datasets:
            _, ep = np.unique(ds.episode, return_inverse=True)
            episodes.append(ep.reshape(-1) + offset)
            offset += int(ep.max()) + 1 if len(ep) else 0
        meta = dict(first.meta)
        meta['sources'] = len(datasets)
        return cls(np.concatenate([d.states for d in datasets]),
                   np.concatenate([d.actions for d in datasets]),
                   np.concatenate([d.next_states for d in datasets]),
                   np.concatenate(episodes) if episodes else np.zeros(0, np.int64),
                   first.dt, first.joint_names, first.robot, meta)

    def split_by_episode(self, holdout_frac: float = 0.1, seed: int = 0
                         ) -> tuple['TransitionDataset', 'TransitionDataset']:
        """(train, holdout) with whole episodes in each, so holdout error is not flattered by
        near-duplicate neighbours. At least one episode goes each way when there are two."""
        if not 0.0 <= holdout_frac < 1.0:
            raise DatasetError(f'holdout_frac must be in [0, 1), got {holdout_frac}')
        ids = self.episode_ids
        rng = np.random.default_rng(seed)
        ids = ids[rng.permutation(len(ids))]
        n_hold = int(round(holdout_frac * len(ids)))
        if holdout_frac > 0 and len(ids) >= 2:
            n_hold = min(max(n_hold, 1), len(ids) - 1)
        hold = np.isin(self.episode, ids[:n_hold])
        return self.subset(~hold), self.subset(hold)

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != '.npz':  # np.savez would append it anyway; return the real name
            path = Path(str(path) + '.npz')
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_keys = sorted(self.meta)
        np.savez_compressed(
            path, format_version=np.int64(FORMAT_VERSION),
            states=self.states, actions=self.actions, next_states=self.next_states,
            episode=self.episode, dt=np.float64(self.dt),
            joint_names=np.array(self.joint_names, dtype=np.str_),
            robot=np.array(self.robot, dtype=np.str_),
            meta_keys=np.array(meta_keys, dtype=np.str_),
            meta_values=np.array([str(self.meta[k]) for k in meta_keys], dtype=np.str_))
        return path

    @classmethod
    def load(cls, path: str | Path) -> 'TransitionDataset':
        path = Path(path)
        if not path.is_file() and path.with_suffix('.npz').is_file():
            path = path.with_suffix('.npz')
        # allow_pickle=False: a data file must never be able to run code.
        with np.load(path, allow_pickle=False) as z:
            version = int(z['format_version']) if 'format_version' in z else 0
            if version > FORMAT_VERSION:
                raise DatasetError(f'{path}: format version {version} is newer than this code ({FORMAT_VERSION})')
            missing = [k for k in ('states', 'actions', 'next_states', 'episode', 'dt', 'joint_names', 'robot')
                       if k not in z]
            if missing:
                raise DatasetError(f'{path}: not a TransitionDataset, missing {missing}')
            meta = {}
            if 'meta_keys' in z:
                meta = {str(k): str(v) for k, v in zip(z['meta_keys'], z['meta_values'])}
            return cls(z['states'], z['actions'], z['next_states'], z['episode'], float(z['dt']),
                       [str(n) for n in z['joint_names']], str(z['robot']), meta)

    # ---- description ----------------------------------------------------------------------
    def summary(self) -> dict:
        """Plain-YAML description for bundle.yaml: sizes, dt, and per-dimension ranges."""
        def stats(a: np.ndarray) -> dict:
            if len(a) == 0:
                return {}
            return {'mean': _floats(a.mean(0)), 'std': _floats(a.std(0)),
                    'min': _floats(a.min(0)), 'max': _floats(a.max(0))}
        lengths = np.bincount(np.unique(self.episode, return_inverse=True)[1].reshape(-1)) \
            if len(self) else np.zeros(0, int)
        out = {
            'robot': self.robot,
            'joint_names': list(self.joint_names),
            'dt': self.dt,
            'num_transitions': int(len(self)),
            'num_episodes': int(self.num_episodes),
            'episode_length': {'min': int(lengths.min()), 'max': int(lengths.max()),
                               'mean': float(lengths.mean())} if len(lengths) else {},
            'state': stats(self.states),
            'action': stats(self.actions),
            'delta': stats(self.deltas),
        }
        if self.meta:
            out['meta'] = {str(k): _plain(v) for k, v in self.meta.items()}
        return out

    def __repr__(self) -> str:
        return (f'TransitionDataset(robot={self.robot!r}, n={len(self)}, episodes={self.num_episodes}, '
                f'dof={self.dof}, dt={self.dt})')


def _floats(a: Iterable) -> list[float]:
    return [float(round(float(x), 6)) for x in np.asarray(a).reshape(-1)]


def _plain(v):
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def episodes_from_starts(lengths: Sequence[int]) -> np.ndarray:
    """Episode id array for consecutive episodes of the given lengths."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), np.asarray(lengths, dtype=np.int64))
