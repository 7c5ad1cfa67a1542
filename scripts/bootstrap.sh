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
want="$(cat setup.py package.xml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing dependencies into $venv (first run takes a few minutes)" >&2
  pip_q=(-q --disable-pip-version-check)
  "$venv/bin/python" -m pip install "${pip_q[@]}" --upgrade pip setuptools wheel 2>&1 | grep -v 'is ignored' >&2 || true
  "$venv/bin/python" -m pip install "${pip_q[@]}" 'torch==2.13.0' 2>&1 | grep -v 'is ignored' >&2 || true
  "$venv/bin/python" -c 'import torch' || { echo "[bootstrap] torch install failed" >&2; exit 1; }
  "$venv/bin/python" -m pip install "${pip_q[@]}" -e '.[ros,train,test]' 2>&1 | grep -v 'is ignored' >&2 || true
  "$venv/bin/python" -c 'import rclpy, mujoco, onnxruntime, mbrl_ros' || { echo "[bootstrap] install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
