#!/usr/bin/env bash
# One-time set-up on a fresh machine (Node >= 20.18, Debian): the pinned pnpm, dependencies, a build.
# System tools the tests need (docker-registry, skopeo, …) are installed by the test setup itself.
set -euo pipefail
cd "$(dirname "$0")/.."

node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<18)) { console.error(`etch needs Node >= 20.18, this is ${process.version}`); process.exit(1) }'

want=$(node -p 'require("./package.json").packageManager.split("@")[1]')
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm -v)" != "$want" ]; then
  echo "setup: installing pnpm $want with npm" >&2
  npm install -g "pnpm@$want" >/dev/null
fi
pnpm install --frozen-lockfile
pnpm build
echo "setup: done (pnpm $(pnpm -v), node $(node -v))" >&2
