#!/usr/bin/env bash
# Compiles the CLI and the libraries into dist/ (or the directory given) and
# copies the files they read at run time next to their modules: the
# monitor's web page. `npm run build`, the container image and the systemd
# unit all run what this produces.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
node node_modules/typescript/bin/tsc -p tsconfig.build.json --outDir "$out"
mkdir -p "$out/bridges/monitor"
rm -rf "$out/bridges/monitor/public"
cp -R bridges/monitor/public "$out/bridges/monitor/public"
# The `agentbus` command (package.json "bin"): runnable as a program, by its shebang.
chmod +x "$out/cli/main.js"
