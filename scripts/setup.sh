#!/usr/bin/env bash
# Sets up squeezejax in ./.venv on a fresh Debian machine with Python 3.11+.
#   bash scripts/setup.sh        core install (train, sweep, report, convert, export)
#   bash scripts/setup.sh test   + PyTorch CPU, submitit and pytest (tests, parity, benchmark)
# Real Fashion-MNIST comes from Debian's dataset-fashion-mnist package (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt pins the versions the test suite last passed with.
if [ "$extra" = test ]; then
  # The CPU build of PyTorch: 2.13.0 is cached on the project's machines (a
  # newer release from the index would be a multi-GB CUDA build).
  .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
else
  .venv/bin/python -m pip install -q -c constraints.txt -e .
fi
# oneDNN's convolution handlers (squeezejax/onednn.py, Linux x86-64) are compiled now,
# against this venv's jaxlib and oneDNN, not in the first run.
.venv/bin/python -c '
from squeezejax import onednn
from squeezejax.errors import UserError
try:
  onednn.installed() and print("oneDNN convolution handlers:", onednn.build())
except UserError as e:
  print("note:", e)'
echo "squeezejax is installed in .venv ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
