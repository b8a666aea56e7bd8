#!/usr/bin/env bash
# Side-by-side speed against PyTorch on this machine: lorafit's go test
# benchmarks and the same work in PyTorch 1.13 (Debian, OpenBLAS), then the
# ratio. The machine is shared and noisy: read ratios, not absolute times.
#
#   scripts/bench.sh [SIZES]      SIZES: comma list, default 28 (224 takes minutes)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sizes=${1:-28}
need_torch
pattern="Forward/resnet50/($(echo "$sizes" | sed 's/,/|/g'))x"
go_out=$(go test -run '^$' -bench "$pattern" -benchtime 10x ./resnet | grep img/s)
go_out+=$'\n'$(go test -run '^$' -bench 'TrainStep' -benchtime 10x ./train | grep img/s)
# OPENBLAS_CORETYPE/L2_SIZE are set on some machines here for old OpenBLAS
# builds; they slow a current one, so the PyTorch side runs without them.
py_out=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 scripts/bench_torch.py --sizes "$sizes")
echo "$go_out"
echo "$py_out"
echo
for c in 2 4; do
  g=$(echo "$go_out" | awk -v c="case$c/" '$1 ~ c {print $(NF-1)}')
  p=$(echo "$py_out" | awk -v c="case$c/" '$1 ~ c {print $(NF-1)}')
  awk -v g="$g" -v p="$p" -v c="$c" 'BEGIN {printf "train step case %s 28x28 batch 64: lorafit %.0f img/s, PyTorch %.0f img/s, ratio %.2f\n", c, g, p, g/p}'
done
for s in ${sizes//,/ }; do
  g=$(echo "$go_out" | awk -v s="Forward/resnet50/${s}x${s}" '$1 ~ s {print $(NF-1)}')
  p=$(echo "$py_out" | awk -v s="Forward/resnet50/${s}x${s}" '$1 ~ s {print $(NF-1)}')
  awk -v g="$g" -v p="$p" -v s="$s" 'BEGIN {printf "inference %sx%s batch 64: lorafit %.0f img/s, PyTorch %.0f img/s, ratio %.2f\n", s, s, g, p, g/p}'
done
