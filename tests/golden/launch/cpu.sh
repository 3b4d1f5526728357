#!/usr/bin/env bash
# wavemlp-kit: node 1 of 2 (2 processes each), recipe cpu.
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
export OMP_NUM_THREADS=2
export PYTHONUNBUFFERED=1

mkdir -p -- "$run_dir/logs"
if [ "$node_rank" -eq 0 ]; then
    # A leftover stop flag would stop this run at its first step; leftover exit codes would pass for its own.
    rm -rf -- "$run_dir/.preempt" "$run_dir/.exit"
fi
# Appended, never truncated: the log of an earlier launch of this run stays above this line.
printf '===== wmlp launch: node %s of %s, %s on %s\n' "$node_rank" 2 "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" >>"$log"

# Stopping: TERM, INT (Ctrl-C), HUP or USR1 here touches the stop file in the shared run folder; every
# trainer of every node reads it after each step, checkpoints and exits 75 (resume with --resume auto).
# Not torchrun's own forwarding: it passes on no USR1, it kills the trainers 30 s after passing a signal
# on (a large checkpoint may need longer), and it differs between torch versions; the file does not.
stopping=0
# Called by the traps below.
# shellcheck disable=SC2329
stop() {
    if [ "$stopping" -eq 0 ]; then
        stopping=1
        echo "wmlp launch: $1 received: the trainers checkpoint and stop ($run_dir/.preempt)" >&2
        touch -- "$run_dir/.preempt"
    fi
}
trap 'stop TERM' TERM
trap 'stop INT' INT
trap 'stop HUP' HUP
trap 'stop USR1' USR1

# torchrun's underscore spellings: the torch of older vendor images (before 2.1) knows no others.
train() {
    # In the background: signals are this script's to handle (above), never a reason for this subshell or
    # tee to end while the trainers still write.
    trap : TERM INT HUP USR1
    "$python" -m torch.distributed.run \
        --nnodes=2 \
        --nproc_per_node=2 \
        --node_rank="$node_rank" \
        --rdzv_backend=c10d \
        --rdzv_endpoint=node001:29500 \
        --rdzv_id=wmlp-wavemlp \
        -m wavemlp.cli train \
        --recipe /shared/jobs/script.recipe.yaml \
        --run-dir "$run_dir" \
        --resume auto \
        "$@" 2>&1 | (trap '' TERM INT HUP USR1; exec tee -a -- "$log")
}
train "$@" &
pid=$!
# A trapped signal ends `wait` early while torchrun runs on: wait until it has ended.
while :; do
    status=0
    wait "$pid" || status=$?
    kill -0 "$pid" 2>/dev/null || break
done

# torchrun exits 1 whatever its trainers exited with; each rank records its own code in
# $run_dir/.exit/rank<R> (see wavemlp/engine/signals.py). Bad input (2) wins over a non-finite loss (3),
# which wins over a checkpoint-and-stop (75); with none of those, torchrun's status stands.
if [ "$status" -ne 0 ]; then
    for code in 2 3 75; do
        if grep -qx -- "$code" "$run_dir"/.exit/rank* 2>/dev/null; then
            echo "wmlp launch: torchrun exited $status; the trainers exited $code" >&2
            status=$code
            break
        fi
    done
fi
exit "$status"
