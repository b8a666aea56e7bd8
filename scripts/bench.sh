#!/usr/bin/env bash
# Side-by-side speed against PyTorch on this machine, in one run: lorafit's
# go test benchmarks and the same work in PyTorch 1.13 (Debian, OpenBLAS,
# oneDNN) at its best — every variant (NCHW, channels_last, torch.jit.freeze,
# optimize_for_inference) in its own process, the fastest kept per measure.
# Each side's CPU use (200% = both cores busy) and peak memory are printed
# with the ratio (>1: lorafit is faster). The machine is shared and noisy:
# read ratios from one run, not absolute numbers across runs. With ROUNDS > 1
# every measure runs that many times, lorafit and PyTorch alternating, and the
# line shows the medians and the range of the rounds' ratios.
#
#   scripts/bench.sh [SIZES] [ROUNDS]   SIZES: comma list of inference sizes, default 28
#                                        (224 takes minutes); ROUNDS: default 1
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sizes=${1:-28}
rounds=${2:-1}
need_torch
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go test -c -o "$bin/resnet.test" ./resnet
go test -c -o "$bin/train.test" ./train

# PyTorch at its best: old-OpenBLAS workarounds off (they slow a current one),
# glibc malloc keeping big buffers instead of returning them to the OS every step.
torch_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736)

# torch_best MEASURE ITERS VARIANTS...: prints "img/s cpu% peakMiB variant" of the fastest.
torch_best() {
  local measure=$1 iters=$2
  shift 2
  for v in "$@"; do
    "${torch_env[@]}" /usr/bin/python3 scripts/bench_torch.py "$measure" "$v" --iters "$iters" |
      awk '$1 == "Torch" {print $4, $6, $8, $3}'
  done | sort -g -r | head -1
}

# go_bench BINARY PATTERN ITERS: prints "img/s cpu% peakMiB" of one benchmark, run in its own process.
go_bench() {
  (cd "${1%%.*}" && "$bin/$1" -test.run '^$' -test.bench "$2" -test.benchtime "${3}x") |
    awk '/img\/s/ {for (i = 1; i <= NF; i++) {if ($i == "img/s") s = $(i-1); if ($i == "cpu%") c = $(i-1); if ($i == "peakMiB") m = $(i-1)}; print s, c, m}'
}

# measure NAME GO_ARGS TORCH_ARGS: runs both sides ROUNDS times, alternating,
# and prints medians, CPU use, peak memory and the ratio (range if ROUNDS > 1).
measure() {
  local name=$1 goargs=$2 torchargs=$3 i
  for ((i = 0; i < rounds; i++)); do
    # shellcheck disable=SC2086 # the argument lists split on purpose
    echo "$(go_bench $goargs) $(torch_best $torchargs)"
  done | awk -v n="$name" '
    function median(a, k,   i, j, t) {
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) {t = a[i]; a[i] = a[j]; a[j] = t}
      return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    {k++; g[k] = $1; gc[k] = $2; gm[k] = $3; p[k] = $4; pc[k] = $5; pm[k] = $6; pv[$7]++; r[k] = $1 / $4}
    END {
      best = ""; for (v in pv) if (best == "" || pv[v] > pv[best]) best = v
      line = sprintf("%-34s lorafit %7.1f img/s (%3.0f%% CPU, %5.0f MiB) | PyTorch %7.1f img/s (%s, %3.0f%% CPU, %5.0f MiB) | ratio %.2f",
        n, median(g, k), median(gc, k), median(gm, k), median(p, k), best, median(pc, k), median(pm, k), median(r, k))
      if (k > 1) line = line sprintf(" (%.2f-%.2f, %d rounds)", r[1], r[k], k) # median() sorted r
      print line
    }'
}

date -u +"%Y-%m-%d %H:%M UTC, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
for c in 2 4; do
  measure "train step case $c, 28x28, batch 64" "train.test TrainStep/case$c/ 10" "train:$c 10 nchw channels_last"
done
for s in ${sizes//,/ }; do
  iters=20
  [ "$s" -ge 112 ] && iters=3
  measure "inference ${s}x${s}, batch 64" "resnet.test Forward/resnet50/${s}x${s}/ $iters" \
    "infer:$s $iters nchw channels_last jit_freeze optimize_for_inference"
done
