#!/usr/bin/env bash
# The dashboard's browser test drives Debian's Chromium (Playwright's own browser download
# cannot be fetched here): install it with apt-get when it is missing.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium: present ($(chromium --version 2>/dev/null | head -n 1))"
    exit 0
fi
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }
echo "chromium: installing with apt-get"
log=$(mktemp)
if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        as_root apt-get install -y -qq chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "chromium: could not be installed; the dashboard test needs /usr/bin/chromium" >&2
    exit 1
fi
echo "chromium: installed ($(chromium --version 2>/dev/null | head -n 1))"
