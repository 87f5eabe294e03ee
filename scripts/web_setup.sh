#!/usr/bin/env bash
# What `tagger export CKPT --format web` and tests/test_web.py need besides Python (docs/web.md):
#   ONNX Runtime Web: the npm package onnxruntime-web at the version package.json pins (and
#     package-lock.json locks), into node_modules/ of this checkout, where the export finds
#     it (node_modules/onnxruntime-web/dist; TAGGER_ORT_WEB=DIR names another folder);
#   with --browser, also Chromium (for the tests' headless browser) when it is missing: by
#     apt-get as root, else one line saying how.
# Needs npm (installed by apt-get as root when missing) and the npm registry once; nothing is
# fetched when the export runs.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root_with_apt() { [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; }
apt_updated=0
apt_install() {
    if [[ $apt_updated == 0 ]]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if ! command -v npm >/dev/null; then
    if as_root_with_apt; then
        apt_install nodejs npm
    else
        echo "web_setup.sh: npm is not installed: install Node.js (which brings npm), then rerun" >&2
        exit 1
    fi
fi
# --ignore-scripts: onnxruntime-web ships its files ready; no install script needs to run
npm ci --ignore-scripts --no-audit --no-fund
echo "web_setup.sh: onnxruntime-web $(node -p 'require("./node_modules/onnxruntime-web/package.json").version') in node_modules/onnxruntime-web/dist"

if [[ "${1:-}" == "--browser" ]]; then
    if command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
        || command -v google-chrome >/dev/null || [[ -n "${TAGGER_CHROMIUM:-}" ]]; then
        echo "web_setup.sh: a Chromium is installed"
    elif as_root_with_apt; then
        apt_install chromium
    else
        echo "web_setup.sh: no Chromium: install one (apt-get install chromium, as root) or set TAGGER_CHROMIUM=PATH" >&2
        exit 1
    fi
fi
