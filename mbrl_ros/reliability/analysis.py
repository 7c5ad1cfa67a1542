"""What the reliability checks compute from what the monitor recorded (ROS-free, unit-tested).

Definitions (docs/reliability.md repeats them):

- **Missed control period.** The safety filter sends one command per period P (20 ms at 50 Hz).
  From the arrival times of the commands on /forward_effort_controller/commands: after a command
  arriving at t, period k (k = 1, 2, ...) is the window [t + (k - ½)P, t + (k + ½)P); it is missed
  when no command arrives in it. So a gap g between two consecutive arrivals misses
  floor(g/P - ½) periods: jitter up to half a period misses nothing, a gap of 2P misses one.
  The window's edges count the same way (from the window start to the first arrival, and from
  the last arrival to the window end).
- **Mode of a period**: the last /mbrl/safety/mode received before that period's command.
- **Reach success** of a goal: the end effector within 2 cm of the goal 3 s after the goal was
  first sent (the last EE sample at or before that instant, and no older than `max_age_s`:
  with no fresh EE sample — the simulator dead — the goal counts as failed).
- **Memory growth** of a node: RSS at the end / RSS at the reference time - 1, for the same
  process (a node that restarted in between has no growth figure: it crashed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

PERIOD_S = 0.02
SUCCESS_RADIUS_M = 0.02
SUCCESS_AFTER_S = 3.0


# ---- control periods ---------------------------------------------------------------------------
def missed_in_gap(gap_s: float, period_s: float = PERIOD_S) -> int:
    """Periods missed in a gap of `gap_s` between two commands (see the module doc)."""
    return max(0, int(math.floor(gap_s / period_s - 0.5 + 1e-9)))


@dataclass
class PeriodStats:
    span_s: float
    commands: int
    expected: int          # span / period
    missed: int
    longest_gap_s: float
    gaps_missing: int      # how many gaps missed at least one period

    @property
    def missed_fraction(self) -> float:
        return self.missed / self.expected if self.expected else float('nan')

    def as_dict(self) -> dict:
        return {'span_s': round(self.span_s, 3), 'commands': self.commands, 'expected_periods': self.expected,
                'missed_periods': self.missed, 'missed_percent': round(100 * self.missed_fraction, 3),
                'longest_gap_ms': round(1e3 * self.longest_gap_s, 1), 'gaps_with_misses': self.gaps_missing}


def period_stats(arrivals: Sequence[float], t0: float, t1: float, period_s: float = PERIOD_S) -> PeriodStats:
    """Missed periods of the command stream in [t0, t1] (arrival times in seconds, any order)."""
    t = np.sort(np.asarray(arrivals, dtype=np.float64))
    t = t[(t >= t0) & (t <= t1)]
    edges = np.concatenate([[t0], t, [t1]])
    gaps = np.diff(edges)
    missed = [missed_in_gap(g, period_s) for g in gaps]
    return PeriodStats(span_s=t1 - t0, commands=int(len(t)), expected=int(round((t1 - t0) / period_s)),
                       missed=int(sum(missed)), longest_gap_s=float(gaps.max()) if len(gaps) else 0.0,
                       gaps_missing=int(sum(1 for m in missed if m)))


def mode_counts(modes_per_command: Sequence[str], missed: int = 0) -> dict:
    """{'mpc': n, 'policy': n, 'hold': n, 'none': n, 'missed': n} over a window's periods."""
    out = {'mpc': 0, 'policy': 0, 'hold': 0, 'none': 0}
    for m in modes_per_command:
        out[m if m in out else 'none'] += 1
    out['missed'] = int(missed)
    return out


# ---- reaching ----------------------------------------------------------------------------------
@dataclass
class GoalOutcome:
    t: float                 # when the goal was first sent
    goal: tuple
    distance: float          # at t + after_s; nan: no fresh EE sample then
    success: bool
    checked: bool            # False: the run ended before t + after_s


def reach_outcomes(goal_t: Sequence[float], goals: Sequence, ee_t: Sequence[float], ee: np.ndarray,
                   t_end: float, radius: float = SUCCESS_RADIUS_M, after_s: float = SUCCESS_AFTER_S,
                   max_age_s: float = 0.1) -> list[GoalOutcome]:
    et = np.asarray(ee_t, dtype=np.float64)
    ep = np.asarray(ee, dtype=np.float64).reshape(-1, 3)
    out = []
    for t, g in zip(goal_t, goals):
        g = np.asarray(g, dtype=np.float64)
        check = t + after_s
        if check > t_end + 1e-9:
            out.append(GoalOutcome(t, tuple(g.tolist()), float('nan'), False, False))
            continue
        i = int(np.searchsorted(et, check, side='right')) - 1
        if i < 0 or check - et[i] > max_age_s:
            d = float('nan')
        else:
            d = float(np.linalg.norm(ep[i] - g))
        out.append(GoalOutcome(t, tuple(g.tolist()), d, bool(d == d and d <= radius), True))
    return out


def success_summary(outcomes: Sequence[GoalOutcome]) -> dict:
    checked = [o for o in outcomes if o.checked]
    d = np.array([o.distance for o in checked], dtype=np.float64)
    ok = sum(o.success for o in checked)
    return {'goals': len(checked), 'successes': int(ok),
            'success_rate': round(ok / len(checked), 4) if checked else None,
            'median_distance_m': round(float(np.nanmedian(d)), 4) if np.isfinite(d).any() else None,
            'no_ee_data': int(np.sum(~np.isfinite(d)))}


def success_by_window(outcomes: Sequence[GoalOutcome], t0: float, window_s: float) -> list[dict]:
    """Success rate of the goals sent in each consecutive `window_s` from t0."""
    checked = [o for o in outcomes if o.checked]
    if not checked:
        return []
    n = int(math.floor((max(o.t for o in checked) - t0) / window_s)) + 1
    rows = []
    for k in range(n):
        inside = [o for o in checked if t0 + k * window_s <= o.t < t0 + (k + 1) * window_s]
        rows.append({'window': k, 'from_s': k * window_s, 'to_s': (k + 1) * window_s,
                     **success_summary(inside)})
    return rows


# ---- memory ------------------------------------------------------------------------------------
def memory_growth(samples: Sequence[tuple], ref_t: float) -> dict:
    """samples: (t, node, pid, rss_bytes). Per node: RSS at the first sample at/after `ref_t`, RSS
    at the last sample, growth fraction (None when the pid changed in between: the node restarted)."""
    by_node: dict = {}
    for t, node, pid, rss in samples:
        by_node.setdefault(node, []).append((t, pid, rss))
    out = {}
    for node, rows in by_node.items():
        rows.sort()
        ref = next((r for r in rows if r[0] >= ref_t), rows[-1])
        last = rows[-1]
        same = ref[1] == last[1]
        out[node] = {'rss_ref_mb': round(ref[2] / 2**20, 2), 'rss_end_mb': round(last[2] / 2**20, 2),
                     'ref_t_s': round(ref[0], 1), 'end_t_s': round(last[0], 1),
                     'growth': (last[2] / ref[2] - 1.0) if same and ref[2] > 0 else None,
                     'restarted': len({r[1] for r in rows}) > 1, 'pids': sorted({r[1] for r in rows})}
    return out


def percentiles(values: Sequence[float], qs=(50, 99)) -> dict:
    v = np.asarray([x for x in values if x == x], dtype=np.float64)
    return {f'p{q}': (round(float(np.percentile(v, q)), 3) if len(v) else None) for q in qs}
