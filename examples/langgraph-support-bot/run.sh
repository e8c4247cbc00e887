#!/usr/bin/env bash
# The LangGraph support bot under faramesh, offline, in one command:
#
#   examples/langgraph-support-bot/run.sh [--dir STACK]
#
# Prepares the Python environment (target/py-venv, see scripts/py-venv) and the faramesh
# binary (cargo build), then runs bot.py: it starts `faramesh dev` on a temporary copy of this
# stack, plays the scene and stops the daemon. FARAMESH_BIN and FARAMESH_PYTHON, when set,
# are used instead of building.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

python=${FARAMESH_PYTHON:-}
if [ -z "$python" ]; then
  python="$("$repo/scripts/py-venv")/bin/python"
fi
if [ -z "${FARAMESH_BIN:-}" ]; then
  (cd "$repo" && cargo build -p faramesh --locked --quiet)
  # Where cargo put it: CARGO_TARGET_DIR or a config may move the target directory.
  target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps --locked \
    | "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export FARAMESH_BIN="$target/debug/faramesh"
fi
exec "$python" "$here/bot.py" "$@"
