#!/usr/bin/env bash
# Full-size ResNet-50 parity against PyTorch (not part of `go test ./...`: it
# needs Debian's torch and ~1 GB of scratch space). See scripts/parity_full.py.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_with_lorafit scripts/parity_full.py "$@"
