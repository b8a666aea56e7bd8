#!/usr/bin/env bash
# serve-bench.sh [SECONDS] [CONCURRENCY] — README's serving numbers, measured
# in one run: the full-size ResNet-50 (random weights) at 28×28 with eight
# case-2 adapters (LoRA r=8 on the four .2.conv3, own fc, MLP head; A and B
# random so every delta is felt), and the first of them merged into plain
# weights. Three servers on loopback; the load generator sends the same
# traffic to (hot) the first adapter only, (mixed) the eight in turn,
# (merged) the merged model, and (hot-lora) the first adapter on a server
# started with --no-merge (LoRA applied per sample even to a batch of one
# adapter), in turns, each scenario SECONDS per round. Environment: ROUNDS
# (2), BATCH_WAIT (the servers' --batch-wait, 5ms).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd
secs=${1:-15}
conc=${2:-64}
rounds=${ROUNDS:-2}
bwait=${BATCH_WAIT:-5ms} # the servers' --batch-wait
port_a=${PORT_A:-18080}
port_b=${PORT_B:-18081}
port_c=${PORT_C:-18082}

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/lorafit" ./cmd/lorafit
go build -o "$work/loadgen" ./scripts/loadgen
mkdir -p "$work/adapters" "$work/none"
for i in 1 2 3 4 5 6 7 8; do
	"$work/lorafit" adapter init --weights random --case 2 --init-lora-weights false --seed "$i" \
		--out "$work/adapters/a$i" >/dev/null 2>&1
done
"$work/lorafit" merge --weights random --adapter "$work/adapters/a1" --out "$work/merged.safetensors" >/dev/null 2>&1

"$work/lorafit" serve --weights random --adapters "$work/adapters" --image-size 28 --batch-wait "$bwait" \
	--addr "127.0.0.1:$port_a" >"$work/a.log" 2>&1 &
pids+=($!)
"$work/lorafit" serve --weights "$work/merged.safetensors" --adapters "$work/none" --image-size 28 --batch-wait "$bwait" \
	--addr "127.0.0.1:$port_b" >"$work/b.log" 2>&1 &
pids+=($!)
"$work/lorafit" serve --weights random --adapters "$work/adapters" --image-size 28 --batch-wait "$bwait" --no-merge \
	--addr "127.0.0.1:$port_c" >"$work/c.log" 2>&1 &
pids+=($!)

echo "$(date -u +%Y-%m-%dT%H:%MZ) $(go version | cut -d' ' -f3) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "loadgen: $conc clients, 1 image per request, $rounds rounds × ${secs}s per scenario; server --max-batch 64 --batch-wait $bwait"
mix=a1,a2,a3,a4,a5,a6,a7,a8
"$work/loadgen" --concurrency "$conc" --duration "${secs}s" --requests 1000000 --rounds "$rounds" --warmup $((4 * conc)) \
	--scenario "hot=http://127.0.0.1:$port_a#a1" \
	--scenario "mixed=http://127.0.0.1:$port_a#$mix" \
	--scenario "merged=http://127.0.0.1:$port_b#base" \
	--scenario "hot-lora=http://127.0.0.1:$port_c#a1" \
	--ratio mixed/hot --ratio hot/merged --ratio mixed/merged --ratio hot-lora/merged ||
	{ cat "$work/a.log" "$work/b.log" "$work/c.log" >&2; exit 1; }
