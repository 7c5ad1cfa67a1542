"""`mbrl-ros bench osc-tune`: the coarse gain sweep that made config/osc_pd.yaml.

Kp × ζ × kq on chained goals of the ROS-free reaching benchmark (nominal sim: no payload, no
friction), Kd = 2·ζ·√(λ·Kp) with λ the end effector's apparent mass (baseline.arm_inertia); the best
by success at 3 s, then settled fraction, then the p90 final distance (mbrl_ros.core.baseline.tune_gains). The
default seed is not one of the benchmark seeds (1000/2000/3000). `--write` stores the winner in
config/osc_pd.yaml (the source tree's), keeping the other robots' entries.
"""
from __future__ import annotations

import json


def add_arguments(p):
    from mbrl_ros.core.baseline import TUNE_KP, TUNE_KQ, TUNE_SEED, TUNE_ZETA
    p.add_argument('--robot', default='arm7', help='built-in robot (arm7, arm3) or MJCF path')
    p.add_argument('--goals', type=int, default=30, help='chained goals per gain set')
    p.add_argument('--seed', type=int, default=TUNE_SEED, help='goal seed (keep it off the benchmark seeds)')
    p.add_argument('--kp', default=','.join(f'{v:g}' for v in TUNE_KP), help='task stiffness values [N/m]')
    p.add_argument('--zeta', default=','.join(f'{v:g}' for v in TUNE_ZETA),
                   help='damping ratios: Kd = 2·zeta·sqrt(lambda·Kp)')
    p.add_argument('--kq', default=','.join(f'{v:g}' for v in TUNE_KQ), help='joint damping values [N·m·s/rad]')
    p.add_argument('--write', action='store_true', help='store the best gains in config/osc_pd.yaml')
    p.add_argument('--short', action='store_true', help='a smoke run: 2 x 1 x 1 grid on 2 goals')
    p.add_argument('--json', action='store_true', help='print the rows as JSON')


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise ValueError(f'{flag}: expected comma-separated numbers, got {text!r}') from None
    if not vals or any(v < 0 for v in vals):
        raise ValueError(f'{flag}: need one or more numbers >= 0, got {text!r}')
    return vals


def run(args) -> int:
    from mbrl_ros.core.baseline import apparent_mass, tune_gains, write_gains
    from mbrl_ros.core.robot import RobotModel

    try:
        robot = RobotModel.load(args.robot)
        kp, zeta, kq = _floats(args.kp, '--kp'), _floats(args.zeta, '--zeta'), _floats(args.kq, '--kq')
        goals = 2 if args.short else args.goals
        if args.short:
            kp, zeta, kq = kp[:2], zeta[:1], kq[:1]
        if goals < 1:
            raise ValueError(f'--goals must be >= 1, got {goals}')
    except ValueError as e:
        print(f'mbrl-ros bench osc-tune: {e}')
        return 2
    if not args.json:
        print(f'{robot.name}: apparent mass {apparent_mass(robot):.2f} kg (heaviest direction, median over typical '
              f'configurations); {len(kp) * len(zeta) * len(kq)} '
              f'gain sets x {goals} chained goals (seed {args.seed})')
        print(f'{"kp":>8}{"kd":>8}{"kq":>6}{"zeta":>6}{"success":>9}{"settled":>9}{"med mm":>9}{"p90 mm":>9}{"stalled":>9}')
    show = None if args.json else (lambda r: print(
        f'{r["kp"]:>8g}{r["kd"]:>8.1f}{r["kq"]:>6g}{r["zeta"]:>6g}{r["success_rate"]:>9.0%}'
        f'{r["settled_fraction"]:>9.0%}{1e3 * r["final_distance_m"]["median"]:>9.1f}'
        f'{1e3 * r["final_distance_m"]["p90"]:>9.1f}{r["stalled"]:>9}', flush=True))
    best, rows = tune_gains(robot, n_goals=goals, seed=args.seed, kp=kp, zeta=zeta, kq=kq, progress=show)
    where = None
    if args.write:
        where = write_gains(robot, best, {'goals': goals, 'seed': args.seed, 'kp': kp, 'zeta': zeta, 'kq': kq})
    if args.json:
        print(json.dumps({'robot': robot.name, 'best': best.__dict__, 'written': str(where) if where else None,
                          'rows': rows}, indent=1))
        return 0
    print(f'best: kp {best.kp:g}, kd {best.kd:.1f}, kq {best.kq:g}' + (f' -> written to {where}' if where else ''))
    return 0
