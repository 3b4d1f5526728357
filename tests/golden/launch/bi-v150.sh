#!/usr/bin/env bash
# wavemlp-kit: node 1 of 2 (16 processes each), recipe bi-v150.
# Written by `wmlp launch`; run it as `bash THIS_FILE [more train arguments]` on node 1, or
# render again rather than edit. Every value below is shell-quoted: this file runs nothing but torchrun.
# It trains from the resolved recipe /shared/jobs/script.recipe.yaml (written beside it, every value fixed).
# SC2016: values are single-quoted on purpose; a $ or a backquote in one is data, never expanded.
# shellcheck disable=SC2016
set -euo pipefail

run_dir=/shared/runs/wavemlp
node_rank=1
log="$run_dir/logs/node$node_rank.log"
# `wmlp launch` sets WMLP_PYTHON to its own interpreter; by hand, the python3 on PATH is used.
python="${WMLP_PYTHON:-python3}"

# The recipe's environment, for every process of this node.
export NCCL_ALGO=Ring
export NCCL_SHM_DISABLE=1
export OMP_NUM_THREADS=4
export PYTHONUNBUFFERED=1

mkdir -p -- "$run_dir/logs"
if [ "$node_rank" -eq 0 ]; then
    # A leftover preemption flag would stop this run at its first step.
    rm -f -- "$run_dir/.preempt"
fi
# Appended, never truncated: the log of an earlier launch of this run stays above this line.
printf '===== wmlp launch: node %s of %s, %s on %s\n' "$node_rank" 2 "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" >>"$log"

# torchrun's underscore spellings: the torch of older vendor images (before 2.1) knows no others.
status=0
"$python" -m torch.distributed.run \
    --nnodes=2 \
    --nproc_per_node=16 \
    --node_rank="$node_rank" \
    --rdzv_backend=c10d \
    --rdzv_endpoint=node001:29500 \
    --rdzv_id=wmlp-wavemlp \
    -m wavemlp.cli train \
    --recipe /shared/jobs/script.recipe.yaml \
    --run-dir "$run_dir" \
    --resume auto \
    "$@" 2>&1 | tee -a -- "$log" || status=$?
exit "$status"
