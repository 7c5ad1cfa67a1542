"""Reliability checks of the running stack (issue 7: chaos, load, soak).

- `analysis`: ROS-free definitions and figures (missed periods, modes, reach success, memory);
- `monitor`: the RSS sampler (what the stack sends and says: mbrl_ros.testing.stack_observer);
- `goals`: the goal driver (random reachable goals); `stack`: the launch file run by the launch
  runner in-process; `harness`: the three together;
- `chaos`, `load`, `soak`: the checks (`mbrl-ros check chaos|load|soak` print their figures;
  test/test_chaos.py, test_load.py, test_soak.py run short forms).
"""
