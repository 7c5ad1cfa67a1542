#!/usr/bin/env bash
# Test command (README, .ci/run). Runs inside the environment made by scripts/bootstrap.sh.
# Each pytest session picks its own ROS_DOMAIN_ID and stays on this machine: UDP on 127.0.0.1 only, no
# shared memory, with the shipped config/fastdds_udp_localhost.xml (mbrl_ros/testing/isolation.py; nothing
# to set by hand). MBRL_TEST_DISCOVERY_RANGE=LOCALHOST ./run test: the old LOCALHOST isolation instead.
set -uo pipefail
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
# pytest exits 5 when nothing was collected: that is a failure for CI, not a pass.
exit $rc
