"""The figures of `mbrl-ros bench sim`, computed from synthetic receive logs (no ROS)."""
import argparse
import json
import re

import numpy as np
import pytest

from mbrl_ros.bench.sim import analyse, format_table


def _logs(rate=250.0, n=2500, latency=0.001, rtf=0.9, wall_stamps=True, seed=0):
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_000.0
    recv = t0 + np.arange(n) / rate + rng.uniform(0, 2e-4, n)  # up to 0.2 ms arrival jitter
    stamps = recv - 2e-4 if wall_stamps else np.arange(n) / rate
    js = [(float(r), int(s), int(round((s - int(s)) * 1e9))) for r, s in zip(recv, stamps)]
    st = [(r + latency, s, ns) for r, s, ns in js[::2]]  # every other one reaches /mbrl/state
    clk = [(t0 + k * 0.01, rtf * k * 0.01) for k in range(int(n / rate * 100))]
    return js, st, clk, t0, float(recv[-1]) + 0.1


def test_rates_jitter_latency_and_rtf():
    js, st, clk, w0, w1 = _logs()
    r = analyse(js, st, clk, [], w0, w1, 250.0, argparse.Namespace(robot='arm3'), np)
    assert r['real_time_factor'] == pytest.approx(0.9, rel=1e-6)
    assert r['joint_states']['mean_rate_hz'] == pytest.approx(250.0, rel=1e-3)
    assert abs(r['joint_states']['rate_error_pct']) < 0.1
    assert 3.7 < r['joint_states']['interarrival_p50_ms'] < 4.3
    assert r['joint_states']['interarrival_p99_ms'] < 4.3
    assert r['joint_states']['stamps_wall_clock']
    s = r['mbrl_state']
    assert s['fraction_of_joint_states'] == pytest.approx(0.5, abs=0.01)
    assert s['estimator_hop_p50_ms'] == pytest.approx(1.0, abs=1e-3)
    assert s['latency_from_stamp_p99_ms'] == pytest.approx(1.2, abs=1e-3)
    table = format_table(r)
    assert 'real-time factor' in table and '0.900' in table
    json.dumps(r)  # --json must serialise


def test_sim_time_stamps_skip_stamp_latency_but_keep_the_hop():
    js, st, clk, w0, w1 = _logs(wall_stamps=False)
    r = analyse(js, st, [], [], w0, w1, None, argparse.Namespace(robot='arm3'), np)
    assert r['real_time_factor'] is None
    assert not r['joint_states']['stamps_wall_clock']
    assert r['joint_states']['rate_error_pct'] is None
    assert 'latency_from_stamp_p50_ms' not in r['mbrl_state']
    assert r['mbrl_state']['estimator_hop_p99_ms'] == pytest.approx(1.0, abs=1e-3)
    assert 'n/a' in format_table(r)


def test_rtf_from_sim_time_in_diagnostics_when_there_is_no_clock():
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    js, st, _, w0, w1 = _logs()
    diags = [(w0 + k, DiagnosticStatus(name='/sim_robot', message='ok', level=b'\x00',
                                       values=[KeyValue(key='sim_time_s', value=f'{3.0 + 0.95 * k:.6g}')]))
             for k in range(1, 10)]
    r = analyse(js, st, [], diags, w0, w1, 250.0, argparse.Namespace(robot='arm3'), np)
    assert r['real_time_factor'] == pytest.approx(0.95, rel=1e-4)
    assert 'sim_time_s' in r['real_time_factor_source']
    assert r['diagnostics']['/sim_robot']['level'] == 0


def test_bench_sim_runs_end_to_end_and_cleans_up():
    """The real thing, briefly: both nodes as processes, JSON out, nothing left behind."""
    import subprocess
    import sys

    import psutil
    res = subprocess.run([sys.executable, '-m', 'mbrl_ros.cli', 'bench', 'sim', '--duration', '3',
                          '--robot', 'arm3', '--json'], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)
    assert 0.5 < r['real_time_factor'] < 1.5, r
    js, st = r['joint_states'], r['mbrl_state']
    assert js['setting_hz'] == 100.0 and abs(js['rate_error_pct']) < 20, js
    assert js['stamps_wall_clock'] and st['count'] > 0.8 * js['count'], r
    assert st['latency_from_stamp_p50_ms'] > 0 and st['estimator_hop_p50_ms'] > 0, st
    assert set(r['diagnostics']) >= {'/sim_robot', '/state_estimator'}, r['diagnostics']
    # The bench's nodes ran in the bench's own domain (it says which on stderr): none may remain.
    domain = re.search(r'ROS_DOMAIN_ID=(\d+)', res.stderr).group(1)
    leftovers = []
    for p in psutil.process_iter(['cmdline']):
        try:
            if any('mbrl_ros.nodes' in a for a in p.info['cmdline'] or []) \
                    and p.environ().get('ROS_DOMAIN_ID') == domain:
                leftovers.append(p)
        except psutil.Error:
            pass
    assert not leftovers, leftovers
