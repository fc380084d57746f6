#!/usr/bin/env bash
# Installs what is missing, builds and installs torii, and runs the demo: a throwaway cluster,
# the same table as heap and as torii, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
cargo run --release -q -p torii-harness --bin torii-demo -- "$@"
