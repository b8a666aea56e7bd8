#!/usr/bin/env bash
# The whole founding study against the same four cases as plain PyTorch
# loops, on the same MNIST subset, in one run: lorafit experiment (base built
# once, frozen prefixes computed once) versus PyTorch 1.13 at its best
# (NCHW and channels_last both run; the faster kept). Prints each side's wall
# time, CPU use and peak memory, and the ratio (<1: lorafit takes less time).
#
#   scripts/bench-study.sh [TRAIN] [TEST] [EPOCHS]     (default 3200 1000 1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
train=${1:-3200}
test=${2:-1000}
epochs=${3:-1}
need_torch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/lorafit" ./cmd/lorafit

/usr/bin/time -f "%e %P %M" -o "$work/time" "$work/lorafit" experiment --weights random:0 --limit-train "$train" \
  --limit-test "$test" --epochs "$epochs" --out "$work/run" >"$work/out" 2>"$work/err"
read -r lw lc lm <"$work/time"
best=""
for fmt in nchw channels_last; do
  line=$(cd scripts && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \
    /usr/bin/python3 study_torch.py --train "$train" --test "$test" --format "$fmt" | awk '$1 == "TorchStudy" {print $2, $4, $6}')
  read -r pw _ _ <<<"$line"
  if [ -z "$best" ] || awk -v a="$pw" -v b="${best%% *}" 'BEGIN {exit !(a < b)}'; then best="$line $fmt"; fi
done
read -r pw pc pm pf <<<"$best"
date -u +"%Y-%m-%d %H:%M UTC, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
awk -v t="$train" -v s="$test" -v e="$epochs" -v lw="$lw" -v lc="${lc%\%}" -v lm="$lm" -v pw="$pw" -v pc="$pc" -v pm="$pm" -v pf="$pf" 'BEGIN {
  printf "4-case study, %d/%d images, %d epoch(s): lorafit %.0f s (%s%% CPU, %.0f MiB) | PyTorch %.0f s (%s, %s%% CPU, %s MiB) | lorafit/PyTorch time %.2f\n",
    t, s, e, lw, lc, lm / 1024, pw, pf, pc, pm, lw / pw }'
grep -A 14 "^LoRA fine-tuning" "$work/out" | grep -E "test accuracy|train time" || true
