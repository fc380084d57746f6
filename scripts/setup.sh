#!/usr/bin/env bash
# Installs what torii needs on a fresh Debian 12 machine (as root, or with sudo), skipping
# whatever is already there, then builds and installs the extension into PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo libssl-dev pkg-config build-essential; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${need_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
# The headers pull the server forward to their version; keep the two matched.
if ! dpkg --compare-versions "$(dpkg-query -W -f='${Version}' postgresql-15)" eq \
        "$(dpkg-query -W -f='${Version}' postgresql-server-dev-15)"; then
    echo "==> matching postgresql-15 to its headers"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-15 postgresql-server-dev-15 >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.1"; then
    echo "==> installing cargo-pgrx 0.18.1 (takes about 5 minutes)"
    cargo install cargo-pgrx --version 0.18.1 --locked
fi
if ! grep -qs "pg15" "$HOME/.pgrx/config.toml"; then
    echo "==> cargo pgrx init --pg15 /usr/bin/pg_config"
    cargo pgrx init --pg15 /usr/bin/pg_config
fi

echo "==> building and installing the torii extension"
cargo pgrx install --release --pg-config /usr/bin/pg_config 2>&1 | grep -v "^\s*$" | tail -n 3
