"""Benchmarks run by `mbrl-ros bench <name>` (registered in mbrl_ros/commands/bench.py).

Each module provides `add_arguments(parser)` and `run(args) -> int`, prints its figures as a
plain table (or JSON with --json), and keeps heavy imports inside `run` so that listing the
benchmarks stays cheap.
"""
