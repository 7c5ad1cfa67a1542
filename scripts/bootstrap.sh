# Sourced by ./run: create/reuse .venv and install mbrl_ros with its ROS 2 wheels.
# torch goes in first, pinned to the CPU build on local disk; a bare `torch` requirement
# would otherwise pull a multi-GB CUDA build.
venv="${MBRL_VENV:-$PWD/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating $venv" >&2
  "$python" -m venv "$venv"
fi
# Reinstall only when the package's install recipe changed.
stamp="$venv/.mbrl_ros_installed"
want="$( (cat setup.py package.xml scripts/bootstrap.sh; ls mbrl_ros/nodes) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing dependencies into $venv (first run takes a few minutes)" >&2
  log="$venv/install.log"
  : > "$log"
  pipi() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1; }
  fail() { echo "[bootstrap] $1; the last lines of $log:" >&2; grep -v 'is ignored' "$log" | tail -20 >&2; exit 1; }
  pipi --upgrade pip setuptools wheel || fail "pip upgrade failed"
  pipi 'torch==2.13.0' || fail "CPU torch install failed"
  pipi -e '.[ros,train,test,bench]' || fail "package install failed"
  "$venv/bin/python" -c 'import torch, rclpy, mujoco, onnxruntime, mbrl_ros' >>"$log" 2>&1 || fail "imports failed after install"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
