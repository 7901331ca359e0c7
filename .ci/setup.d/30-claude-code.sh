#!/bin/sh
# Claude Code (the claude-code agent runtime, SPEC §15), pinned, installed globally with npm so that
# `claude` is on root's PATH. Its native binary comes in the optional package
# @anthropic-ai/claude-code-linux-x64 (~360 MB); the install must bring it (npm skips optional
# packages on --omit=optional or a failed fetch, so it is checked and installed by name if missing).
# Idempotent: nothing is fetched when the pinned version and its binary are already there.
set -eu
VERSION=2.1.332
PKG=@anthropic-ai/claude-code
NATIVE=@anthropic-ai/claude-code-linux-x64

if ! command -v npm >/dev/null 2>&1; then
  echo "30-claude-code: npm is missing; the claude-code tests will skip" >&2
  exit 0
fi
case "$(uname -m)" in
  x86_64) ;;
  *) echo "30-claude-code: only linux-x64 is pinned here; skipping" >&2; exit 0 ;;
esac

root=$(npm root -g)
installed_version() {
  # The "version" of an installed package.json, or nothing.
  [ -f "$root/$1/package.json" ] || return 0
  node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' \
    "$root/$1/package.json" 2>/dev/null || true
}

if [ "$(installed_version "$PKG")" != "$VERSION" ]; then
  # The package asks for node >= 22 (engines); node 20 runs its installer and the native binary
  # needs no node at all, so the engines field is advisory here.
  npm install -g --no-fund --no-audit --loglevel=error "$PKG@$VERSION" >/dev/null
fi
if [ "$(installed_version "$PKG/node_modules/$NATIVE")" != "$VERSION" ] &&
  [ "$(installed_version "$NATIVE")" != "$VERSION" ]; then
  npm install -g --no-fund --no-audit --loglevel=error "$NATIVE@$VERSION" >/dev/null
  # Re-run the wrapper's installer, which links the native binary into place.
  (cd "$root/$PKG" && node install.cjs >/dev/null) || true
fi

got=$(claude --version 2>/dev/null || true)
case "$got" in
  "$VERSION"*) ;;
  *) echo "30-claude-code: claude --version says '$got', expected $VERSION" >&2; exit 1 ;;
esac
