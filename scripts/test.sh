#!/usr/bin/env bash
# Test command (README, .ci/run). Runs inside the environment made by scripts/bootstrap.sh.
# Each pytest session picks its own ROS_DOMAIN_ID and localhost-only discovery (test/conftest.py).
set -uo pipefail
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
# pytest exits 5 when nothing was collected: that is a failure for CI, not a pass.
exit $rc
