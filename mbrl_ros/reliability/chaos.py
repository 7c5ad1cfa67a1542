"""Chaos check: SIGKILL each node of the running sim stack in a seeded random order while it
reaches goals; the stack must fail safe and recover by itself when the node is back.

Per fault: the node, the mode the safety filter went to and how long after the kill, the time
from the node's restart until the stack works again, the commands outside the limits (must be
0) and the control periods missed.

What "as designed" is, per node (the filter's state_timeout_s / command_timeout_s are 0.1 s):

| node killed | what the stack sees | designed outcome |
|---|---|---|
| sim_robot | no /joint_states -> no /mbrl/state | `hold` (stale state: zero effort); the MPC and policy stop (stale state). "Safe" for a dead arm: nothing stale is applied to it when it is back (it restarts at home and is driven in hold until fresh state and fresh plans flow) |
| state_estimator | no /mbrl/state | `hold` (stale state: zero effort) |
| world_model | no predictions; nothing else (the controllers and the filter loaded the bundle themselves) | stays `mpc` |
| mpc_controller | no MPC command | `policy` if the bundle has policy.onnx, else `hold` |
| policy | no fallback command | stays `mpc` |
| safety_filter | no command reaches the arm | sim_robot's watchdog commands zero effort after its command_timeout_s (gravity compensation only) |

Recovery: the restarted node's output flows again (its liveness topic, see stack_observer.LIVENESS; the
policy node with no policy.onnx has none: its /diagnostics instead) and the filter is in `mpc`
again (a mode message after the restart).
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

from mbrl_ros.reliability import analysis as A
from mbrl_ros.reliability.harness import ReachingSession, load_note

NODES = ('state_estimator', 'world_model', 'mpc_controller', 'policy', 'safety_filter', 'sim_robot')
WATCHDOG = 'watchdog'   # the outcome when the filter is dead: the arm's own watchdog zeroes the effort
ARM_COMMANDS_WITHIN_S = 5.0   # after a recovery, the arm's received-command count must grow within this
_WATCHDOG_LINE = re.compile(r'^\[sim_robot\] \[\w+\] \[(?P<t>[\d.]+)\] \[sim_robot\]: no command for')


def designed_outcome(node: str, has_policy: bool) -> str:
    return {'sim_robot': 'hold', 'state_estimator': 'hold', 'world_model': 'mpc',
            'mpc_controller': 'policy' if has_policy else 'hold', 'policy': 'mpc',
            'safety_filter': WATCHDOG}[node]


@dataclass
class Fault:
    index: int
    node: str
    designed: str
    outcome: Optional[str] = None         # mode the filter went to (or 'watchdog' / 'mpc' = unchanged)
    to_outcome_s: Optional[float] = None  # kill -> outcome (None when unchanged)
    down_s: Optional[float] = None        # kill -> new process started
    recover_s: Optional[float] = None     # restart -> node output flowing and mode mpc again
    out_of_limit: int = 0
    missed_periods: int = 0
    periods: int = 0
    modes: dict = field(default_factory=dict)
    conclusive: bool = True               # False: 'unchanged' cannot be judged (no mpc before the kill)
    arm_commanded: bool = True            # after the recovery, commands reach the arm (sim_robot)
    notes: list = field(default_factory=list)

    @property
    def as_designed(self) -> bool:
        return self.outcome == self.designed

    @property
    def recovered(self) -> bool:
        return self.recover_s is not None and self.arm_commanded

    def line(self) -> str:
        f = (lambda v, unit='s': '-' if v is None else f'{v:.2f} {unit}')
        return (f'[chaos] fault {self.index:2d}: {self.node:15s} -> {str(self.outcome):8s} '
                f'(designed {self.designed}{"" if self.as_designed else " NOT MET"}) after {f(self.to_outcome_s)}; '
                f'restarted after {f(self.down_s)}, recovered {f(self.recover_s)} later; '
                f'out-of-limit {self.out_of_limit}; missed periods {self.missed_periods}/{self.periods}'
                + (f'; {"; ".join(self.notes)}' if self.notes else ''))


def fault_order(nodes, n_faults: int, seed: int) -> list[str]:
    """Seeded random order, every node once per round (a permutation per round)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n_faults:
        out.extend(rng.permutation(list(nodes)).tolist())
    return out[:n_faults]


class ChaosRun:
    def __init__(self, session: ReachingSession, say: Callable[[str], None] = print,
                 steady_s: float = 1.0, recover_timeout_s: float = 60.0, settle_s: float = 0.3,
                 steady_timeout_s: float = 20.0, unchanged_share: float = 0.25):
        self.s = session
        self.say = say
        self.steady_s = steady_s
        self.recover_timeout_s = recover_timeout_s
        self.settle_s = settle_s
        self.steady_timeout_s = steady_timeout_s
        self.unchanged_share = unchanged_share
        self.faults: list[Fault] = []

    # ---- helpers ------------------------------------------------------------------------------
    def _wait_steady(self) -> bool:
        """Mode mpc for `steady_s`, commands flowing, every node alive."""
        mon, stack = self.s.monitor, self.s.stack
        names = set(stack.names())

        def steady():
            if mon.mode != 'mpc' or set(stack.pids()) != names:
                return False
            changes = mon.mode_changes(time.time() - self.steady_s)
            t, _ = mon.commands(time.time() - 0.1)
            return all(m == 'mpc' for _, m in changes) and len(t) > 0
        return bool(mon.wait(steady, self.steady_timeout_s, 0.05))

    def _liveness_key(self, node: str) -> str:
        if node == 'policy' and not self.s.has_policy:
            return 'diag:policy'          # no policy.onnx: the node publishes no commands
        return node

    def _mpc_since(self, t_restart: float, fresh_filter: bool) -> Optional[float]:
        """When the filter was in mpc again after t_restart: t_restart itself if mpc was in force
        then (a node whose loss did not change the mode), else its first mpc message after. A
        restarted filter must say so itself (the dead one's last latched mode means nothing)."""
        before = [m for t, m in self.s.monitor.mode_changes(t_restart - 3600) if t <= t_restart]
        if not fresh_filter and before and before[-1] == 'mpc':
            return t_restart
        back = [t for t, m in self.s.monitor.mode_changes(t_restart) if m == 'mpc']
        return back[0] if back else None

    def _check_arm_gets_commands(self, fault: Fault, t_back: float) -> None:
        """End to end: after the recovery, the arm (sim_robot) receives commands again: its
        commands_received grows between two of its /diagnostics after the recovery. (Its
        watchdog_active flag alone says little on a loaded machine: any 100 ms gap trips it.)"""
        mon = self.s.monitor

        def sim_after(t):
            d = mon.diag.get('sim_robot')
            return d if d and d[0] > t else None
        def received(d):
            try:
                return int(d[3]['commands_received'])
            except (KeyError, ValueError, TypeError):
                return None
        first = mon.wait(lambda: sim_after(t_back + 0.1), 5.0, 0.05)
        if not first or received(first) is None:
            fault.notes.append('no sim_robot diagnostics with commands_received after the recovery')
            return
        n1 = received(first)
        # A respawned sim_robot may match the filter's command writer a second or two after its own
        # /joint_states are flowing again (DDS discovery of the new process, on a loaded machine):
        # its count must grow within ARM_COMMANDS_WITHIN_S of the recovery.
        def grown():
            d = sim_after(first[0] + 0.1)
            return d if d is not None and (received(d) or 0) > n1 else None
        later = mon.wait(grown, ARM_COMMANDS_WITHIN_S, 0.05)
        if not later:
            last = mon.diag.get('sim_robot')
            fault.arm_commanded = False
            fault.notes.append(f'the arm gets NO commands within {ARM_COMMANDS_WITHIN_S:g} s of the recovery '
                               f'({n1} -> {received(last) if last else "?"} received)')
        elif later[0] - t_back > 1.5:
            fault.notes.append(f'the arm commanded again {later[0] - t_back:.1f} s after the recovery')

    def _watchdog_time(self, after: float) -> Optional[float]:
        for line in self.s.stack.lines():
            m = _WATCHDOG_LINE.match(line)
            if m and float(m['t']) > after:
                return float(m['t'])
        return None

    # ---- one fault ----------------------------------------------------------------------------
    def inject(self, index: int, node: str) -> Fault:
        s, mon, stack = self.s, self.s.monitor, self.s.stack
        fault = Fault(index, node, designed_outcome(node, s.has_policy))
        if not self._wait_steady():
            fault.notes.append(f'not steady before the kill (mode {mon.mode})')
        viol0 = mon.violations
        trips0 = mon.watchdog[-1][1] if mon.watchdog else 0
        t_kill = time.time()
        old_pid = stack.kill(node)
        t_restart = stack.wait_restarted(node, old_pid, self.recover_timeout_s)
        if t_restart is None:
            fault.notes.append('not restarted')
            self.faults.append(fault)
            return fault
        fault.down_s = t_restart - t_kill

        # Recovery: the node's own output after its restart, and mode mpc after the restart.
        key = self._liveness_key(node)

        def recovered():
            seen = mon.last_seen(key)
            if seen is None or seen <= t_restart or mon.mode != 'mpc':
                return None
            ok_since = self._mpc_since(t_restart, fresh_filter=(node == 'safety_filter'))
            return None if ok_since is None else max(seen, ok_since)
        t_back = mon.wait(recovered, self.recover_timeout_s, 0.02)
        if t_back:
            fault.recover_s = max(0.0, t_back - t_restart)
        else:
            fault.notes.append(f'no recovery within {self.recover_timeout_s:g} s (mode {mon.mode})')
        t_end = t_back or time.time()
        self._check_arm_gets_commands(fault, t_end)

        # What the filter did meanwhile.
        if node == 'safety_filter':
            t_wd = self._watchdog_time(t_kill)
            trips = mon.watchdog[-1][1] if mon.watchdog else 0
            if t_wd is not None:
                fault.outcome, fault.to_outcome_s = WATCHDOG, t_wd - t_kill
            elif trips > trips0:
                fault.outcome = WATCHDOG
                fault.notes.append('watchdog trip seen in diagnostics only')
            else:
                fault.outcome = 'none'
                fault.notes.append('sim_robot watchdog did NOT trip')
            cmds, _ = mon.commands(t_kill, t_restart)
            if len(cmds):
                fault.notes.append(f'last command {1e3 * (cmds.max() - t_kill):.0f} ms after the kill')
        else:
            # The mode the filter settled in while the node was down: the most common mode of the
            # commands from `settle_s` after the kill (past the filter's timeouts) to the restart.
            # (A blip of hold from a late MPC plan on a loaded machine is not the fault's outcome.)
            _, during = mon.commands(t_kill + self.settle_s, t_restart)
            counts = A.mode_counts(during)
            share = {m: counts[m] / max(1, len(during)) for m in ('mpc', 'policy', 'hold')}
            fault.outcome = max(share, key=share.get) if during else 'none'
            if fault.designed == 'policy' and during and share['mpc'] < 0.05:
                # The MPC is gone; the policy covers the periods in which its own command is
                # fresh and confident, hold the rest (a late policy on a loaded machine): the
                # fault ends in the policy when it covers any of them.
                fault.outcome = 'policy' if share['policy'] > 0 else 'hold'
                fault.notes.append(f"policy covered {100 * share['policy']:.0f} % of the periods while down")
            if fault.designed == 'mpc' and during:
                # "Unchanged" means the filter keeps passing the MPC: at least a quarter of the
                # periods, or (when the stack was mostly holding before the kill, a loaded
                # machine) about as many as just before. The MPC is late now and then on a
                # loaded machine and the filter holds for those periods whatever else happens;
                # with the policy gone, the policy no longer covers them either.
                _, before = mon.commands(t_kill - max(1.0, t_restart - t_kill), t_kill)
                cb = A.mode_counts(before)
                before_mpc = cb['mpc'] / max(1, len(before))
                if share['mpc'] >= min(self.unchanged_share, before_mpc - self.unchanged_share):
                    fault.outcome = 'mpc'
                fault.notes.append(f"mpc share {100 * before_mpc:.0f} % before the kill, "
                                   f"{100 * share['mpc']:.0f} % while down")
                if before_mpc < self.unchanged_share:
                    fault.conclusive = False
                    fault.notes.append('INCONCLUSIVE: the MPC hardly got through before the kill either (load)')
            if fault.outcome not in ('mpc', 'none'):
                at_kill = [m for t, m in mon.mode_changes(t_kill - 3600) if t <= t_kill]
                first = [t for t, m in mon.mode_changes(t_kill) if m == fault.outcome]
                if at_kill and at_kill[-1] == fault.outcome:
                    fault.to_outcome_s = 0.0
                    fault.notes.append(f'already {fault.outcome} at the kill')
                else:
                    fault.to_outcome_s = first[0] - t_kill if first else None
            if during and share.get(fault.outcome, 1.0) < 0.9:
                fault.notes.append('modes while down: ' + ', '.join(f'{m} {counts[m]}' for m in ('mpc', 'policy', 'hold')
                                                                    if counts[m]))
        t, modes = mon.commands(t_kill, t_end)
        ps = A.period_stats(t, t_kill, t_end)
        fault.missed_periods, fault.periods = ps.missed, ps.expected
        fault.modes = A.mode_counts(modes, ps.missed)
        fault.out_of_limit = mon.violations - viol0
        self.faults.append(fault)
        return fault

    # ---- the run ------------------------------------------------------------------------------
    def run(self, duration_s: float, seed: int = 0, nodes=NODES, max_faults: Optional[int] = None,
            sequence: Optional[list] = None) -> dict:
        """Faults in a seeded random order (or exactly `sequence`) until `duration_s` would be exceeded."""
        t0 = time.time()
        order = list(sequence) if sequence else fault_order(nodes, max_faults or 10 ** 6, seed)
        mean = None
        for i, node in enumerate(order):
            elapsed = time.time() - t0
            if max_faults is not None and i >= max_faults:
                break
            if mean is not None and elapsed + mean > duration_s:
                break
            f = self.inject(i + 1, node)
            self.say(f.line())
            mean = (time.time() - t0) / (i + 1)
        return self.summary(t0, time.time())

    def summary(self, t0: float, t1: float) -> dict:
        mon = self.s.monitor
        gt, goals = mon.goal_record()
        et, ee = mon.ee_record()
        reach = A.success_summary(A.reach_outcomes(gt, goals, et, ee, t1))
        by_node: dict = {}
        for f in self.faults:
            d = by_node.setdefault(f.node, {'faults': 0, 'as_designed': 0, 'recovered': 0, 'out_of_limit': 0,
                                            'inconclusive': 0, 'to_outcome_s': [], 'recover_s': []})
            d['inconclusive'] += int(not f.conclusive)
            d['faults'] += 1
            d['as_designed'] += int(f.as_designed)
            d['recovered'] += int(f.recovered)
            d['out_of_limit'] += f.out_of_limit
            if f.to_outcome_s is not None:
                d['to_outcome_s'].append(round(f.to_outcome_s, 3))
            if f.recover_s is not None:
                d['recover_s'].append(round(f.recover_s, 2))
        t, _ = mon.commands(t0, t1)
        return {'duration_s': round(t1 - t0, 1), 'faults': [asdict(f) | {'as_designed': f.as_designed}
                                                            for f in self.faults],
                'by_node': by_node, 'out_of_limit_total': mon.violations,
                'violation_examples': mon.violation_examples[:5],
                'all_as_designed': all(f.as_designed for f in self.faults),
                'all_recovered': all(f.recovered for f in self.faults),
                'inconclusive': sum(not f.conclusive for f in self.faults),
                'reach': reach, 'periods': A.period_stats(t, t0, t1).as_dict(),
                'has_policy': self.s.has_policy, 'load': load_note()}


def format_summary(res: dict) -> str:
    lines = [f"[chaos] {len(res['faults'])} faults in {res['duration_s']} s; policy.onnx in the bundle: "
             f"{res['has_policy']}; {res['load']}",
             f"{'node':15s} {'faults':>6s} {'as designed':>11s} {'recovered':>9s} {'out-of-limit':>12s}  "
             f"{'to mode [s] (median, max)':>26s}  {'recovery [s] (median, max)':>26s}"]
    for node, d in sorted(res['by_node'].items()):
        def mm(v):
            return f'{np.median(v):.2f}, {max(v):.2f}' if v else '-'
        lines.append(f"{node:15s} {d['faults']:6d} {d['as_designed']:11d} {d['recovered']:9d} "
                     f"{d['out_of_limit']:12d}  {mm(d['to_outcome_s']):>26s}  {mm(d['recover_s']):>26s}")
    p = res['periods']
    lines.append(f"[chaos] commands outside the limits: {res['out_of_limit_total']} (must be 0); all as designed: "
                 f"{res['all_as_designed']} ({res['inconclusive']} inconclusive); all recovered: {res['all_recovered']}")
    lines.append(f"[chaos] over the whole run: missed periods {p['missed_periods']}/{p['expected_periods']} "
                 f"({p['missed_percent']} %, faults included); reach {res['reach']['successes']}/"
                 f"{res['reach']['goals']} goals (faults included)")
    return '\n'.join(lines)
