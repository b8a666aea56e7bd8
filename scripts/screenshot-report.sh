#!/usr/bin/env bash
# screenshot-report.sh DIR — render DIR/report.html headless into DIR/report.png,
# so a report's layout can be checked by eye (or attached to an issue) without
# a desktop. Installs Debian's chromium if it is missing.
set -euo pipefail

dir=${1:?usage: $0 DIR   (DIR holds report.html)}
html=$(cd "$dir" && pwd)/report.html
out=$(cd "$dir" && pwd)/report.png
[[ -f $html ]] || { echo "$0: no $html" >&2; exit 1; }

chrome=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $chrome ]]; then
	sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
	# The lock timeout waits for another apt instead of failing on it.
	$sudo apt-get -o DPkg::Lock::Timeout=900 update
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y chromium
	chrome=$(command -v chromium)
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rm -f "$out"
"$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync \
	--user-data-dir="$profile" --window-size=1280,2400 \
	--screenshot="$out" "file://$html" 2>"$profile/chromium.log" || {
	cat "$profile/chromium.log" >&2
	exit 1
}

# A blank or failed render is a few hundred bytes; a real report is far more.
size=$(stat -c %s "$out" 2>/dev/null || echo 0)
if ((size < 20000)); then
	echo "$0: $out missing or tiny ($size bytes)" >&2
	cat "$profile/chromium.log" >&2
	exit 1
fi
echo "$out ($size bytes)"
