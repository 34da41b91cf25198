#!/usr/bin/env bash
# Train the runs of book/data/multihead/sweep.json on one core each, two queues in parallel, and
# commit every checkpoint as it finishes (runs with a valid checkpoint are kept and skipped).
# Usage: scripts/train_multihead_sweep.sh "RUN RUN ..." "RUN RUN ..."
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=book/data/multihead/sweep.json
queue() {
  local core=$1; shift
  for name in "$@"; do
    taskset -c "$core" .venv/bin/python -m softmax_icl.multihead_training --config "$CONFIG" --only "$name"
    flock .git/sweep.lock git add "book/data/multihead/$name.npz" "book/data/multihead/$name.json"
    flock .git/sweep.lock git commit -q -m "Multi-head sweep: checkpoint $name" -- \
      "book/data/multihead/$name.npz" "book/data/multihead/$name.json"
  done
}
# shellcheck disable=SC2086
queue 0 $1 &
# shellcheck disable=SC2086
queue 1 $2 &
wait
