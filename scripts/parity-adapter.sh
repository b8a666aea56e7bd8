#!/usr/bin/env bash
# LoRA adapter parity against PyTorch (not part of `go test ./...`: it needs
# Debian's torch and ~300 MB of scratch space). See scripts/parity_adapter.py;
# arguments are passed on to it (e.g. --cases 2,3).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_with_lorafit scripts/parity_adapter.py "$@"
