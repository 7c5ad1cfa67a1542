"""`mbrl-ros collect`: exploration data for the world model, always written as a rosbag2 MCAP bag.

Default: the fast ROS-free path on the MuJoCo arm (mbrl_ros.core.data.collect). With --live:
publish exploration commands over ROS to a running sim_robot or real arm and record
/joint_states + the commands (mbrl_ros.ros.recorder). Either way `read_bag` turns the bag into
transitions, and --npz also writes them as a TransitionDataset for `mbrl-ros train --data`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def add_arguments(p):
    p.add_argument('--robot', default='arm7', help='built-in robot (arm7, arm3) or an MJCF path')
    p.add_argument('--transitions', type=int, default=20000, help='number of transitions (control periods)')
    p.add_argument('--exploration', default='colored', choices=['colored', 'uniform'],
                   help='exploration noise: colored (temporally correlated) or uniform (white)')
    p.add_argument('--amplitude', type=float, default=0.3, help='noise scale as a fraction of the effort limits')
    p.add_argument('--beta', type=float, default=1.0, help='colored noise exponent (PSD ~ 1/f^beta)')
    p.add_argument('--limit-margin', type=float, default=0.1,
                   help='joint-limit push-back zone as a fraction of each joint range (0: off)')
    p.add_argument('--episode-len', type=int, default=200, help='control periods per episode')
    p.add_argument('--seed', type=int, default=0, help='random seed of the exploration and the start states')
    p.add_argument('--dt', type=float, default=0.02, help='control period (s)')
    p.add_argument('--out', required=True, help='bag directory to write (rosbag2, MCAP storage)')
    p.add_argument('--npz', nargs='?', const='', default=None, metavar='PATH',
                   help='also write the transitions as a .npz TransitionDataset (PATH omitted: OUT.npz)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing bag at --out')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    live = p.add_argument_group('live collection (--live)')
    live.add_argument('--live', action='store_true',
                      help='explore over ROS topics against a running sim_robot or real arm')
    live.add_argument('--stale-timeout', type=float, default=0.1,
                      help='no /joint_states for this long: stop sending commands (s)')
    live.add_argument('--wait', type=float, default=10.0, help='give up if no /joint_states within this (s)')


def run(args) -> int:
    from mbrl_ros.core.robot import RobotModel

    try:
        robot = RobotModel.load(args.robot)
        if args.transitions < 1:
            raise ValueError('--transitions must be >= 1')
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise FileExistsError(f'{out} exists (use --overwrite to replace it)')
        t0 = time.perf_counter()
        ds = _collect_live(robot, args) if args.live else _collect_sim(robot, args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f'mbrl-ros collect: {exc}', file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    npz = None
    if args.npz is not None:
        npz = ds.save(args.npz or str(out) + '.npz')
    _print_summary(ds, out, npz, elapsed)
    return 0


def _collect_sim(robot, args):
    from mbrl_ros.core.data.bags import write_bag
    from mbrl_ros.core.data.collect import collect_sim
    t0 = time.perf_counter()
    ds = collect_sim(robot, args.transitions, exploration=args.exploration, seed=args.seed,
                     episode_len=args.episode_len, amplitude=args.amplitude, beta=args.beta, dt=args.dt,
                     limit_margin=args.limit_margin, progress=not args.no_progress)
    rate = len(ds) / max(time.perf_counter() - t0, 1e-9)
    print(f'simulated {len(ds)} transitions at {rate:.0f} transitions/s')
    write_bag(ds, args.out, overwrite=args.overwrite, custom={'source': 'sim'})
    return ds


def _collect_live(robot, args):
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from tqdm import tqdm

    from mbrl_ros.core.data.bags import BagWriter, read_bag
    from mbrl_ros.core.data.exploration import Exploration
    from mbrl_ros.ros.recorder import LiveRecorder

    expl = Exploration(robot, args.exploration, amplitude=args.amplitude, beta=args.beta, seed=args.seed,
                       limit_margin=args.limit_margin)
    custom = {'robot': robot.name, 'dt': args.dt, 'joint_names': ','.join(robot.joint_names),
              'description_hash': robot.description_hash, 'source': 'live',
              'meta.exploration': args.exploration, 'meta.amplitude': args.amplitude,
              'meta.seed': args.seed, 'meta.source': 'live'}
    rclpy.init()
    bar = None if args.no_progress else tqdm(total=args.transitions, unit='cmd', desc='collect (live)')
    node = None
    interrupted = False
    try:
        with BagWriter(args.out, custom=custom, overwrite=args.overwrite) as writer:
            node = LiveRecorder(robot, writer, expl, args.transitions, dt=args.dt, episode_len=args.episode_len,
                                stale_timeout_s=args.stale_timeout,
                                on_command=(lambda n: bar.update(1)) if bar is not None else None)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            deadline = time.monotonic() + args.wait
            try:
                while not node.done:
                    executor.spin_once(timeout_sec=0.05)
                    if node.sent == 0 and time.monotonic() > deadline:
                        raise RuntimeError(f'no usable /joint_states within {args.wait} s: is sim_robot '
                                           '(or the robot driver) running, on this ROS_DOMAIN_ID?')
            except (KeyboardInterrupt, ExternalShutdownException):
                interrupted = True
            finally:
                if rclpy.ok():
                    node.stop()
                    executor.spin_once(timeout_sec=0.05)  # let the hold command go out
            counts = dict(writer.counts)
    finally:
        if bar is not None:
            bar.close()
        if node is not None:
            print(f'sent {node.sent} commands ({node.refused} refused, {node.stale_ticks} periods waiting '
                  f'for fresh joint states, {node.bad_states} unusable joint states)')
            node.destroy_node()
        rclpy.try_shutdown()
    print(f'recorded {counts}' + (' (interrupted)' if interrupted else ''))
    return read_bag(args.out, robot, args.dt)


def _print_summary(ds, out, npz, elapsed):
    s = ds.summary()
    print(f'robot {s["robot"]}: {s["num_transitions"]} transitions in {s["num_episodes"]} episodes, '
          f'dt {s["dt"]} s ({elapsed:.1f} s total)')
    if len(ds):
        import numpy as np
        d = ds.dof
        q, qd = ds.states[:, :d], ds.states[:, d:]
        print('  q range    [' + ', '.join(f'{a:+.2f}..{b:+.2f}' for a, b in zip(q.min(0), q.max(0))) + '] rad')
        print(f'  |qd| max   {np.abs(qd).max():.2f} rad/s, |effort| rms '
              f'{np.sqrt(np.mean(ds.actions ** 2)):.2f} Nm')
    print(f'bag: {out}' + (f'\nnpz: {npz}' if npz else ''))
