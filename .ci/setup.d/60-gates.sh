#!/bin/sh
# Quality-gate tests (tests/gates): real git repositories and sh/setsid. Idempotent and quiet.
# npm is optional: the Node end-to-end gate test skips (saying why) when npm is absent.
set -eu
export DEBIAN_FRONTEND=noninteractive
need=""
command -v git >/dev/null 2>&1 || need="$need git"
command -v setsid >/dev/null 2>&1 || need="$need util-linux"
if [ -n "$need" ]; then
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
