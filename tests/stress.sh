#!/usr/bin/env bash
# `make test-busy`: the README's test command (`make test`) with one busy process per core
# beside it, at normal priority, as on a working laptop or a shared CI runner.
#
#   tests/stress.sh [RUNS] [--fresh]
#
# RUNS (default 1) runs in a row; it stops at the first failing one. With --fresh each run
# starts from a fresh `git clone` of this repository's HEAD in a scratch directory (its own
# .venv included), as a newcomer and CI do. The busy processes are started and stopped by
# their PIDs; the summary gives each run's passed/failed counts and wall time.
set -euo pipefail

runs=1
fresh=0
for arg in "$@"; do
    case "$arg" in
        --fresh) fresh=1 ;;
        ''|*[!0-9]*) echo "usage: tests/stress.sh [RUNS] [--fresh]" >&2; exit 2 ;;
        *) runs=$arg ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/roost-stress-XXXXXX")
hogs=()

stop_hogs() {
    local pid
    for pid in "${hogs[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    hogs=()
}
cleanup() {
    stop_hogs
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cores=$(nproc)
summary=()
status=0
for run in $(seq 1 "$runs"); do
    tree=$repo
    if [ "$fresh" = 1 ]; then
        tree=$scratch/run$run
        git clone --quiet "$repo" "$tree"
    fi
    for _ in $(seq 1 "$cores"); do
        python3 -c 'while True: pass' &
        hogs+=($!)
    done
    echo "== run $run of $runs in $tree, beside $cores busy processes (pids ${hogs[*]})"
    started=$(date +%s)
    if (cd "$tree" && make test) 2>&1 | tee "$scratch/run$run.log"; then result=ok; else result=FAILED; fi
    seconds=$(( $(date +%s) - started ))
    stop_hogs
    counts=$(grep -aE '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$scratch/run$run.log" | tail -n 1 | tr -d '=' | sed 's/^ *//;s/ *$//')
    summary+=("run $run: $result, ${counts:-no pytest summary} ($seconds s with make's set-up and lint)")
    [ "$fresh" = 1 ] && rm -rf "$tree"
    if [ "$result" != ok ]; then
        status=1
        break
    fi
done

echo
echo "== make test beside $cores busy processes"
printf '%s\n' "${summary[@]}"
exit "$status"
