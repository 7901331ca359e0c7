#!/bin/sh
# System packages the bwrap sandbox and its tests need: bubblewrap, prlimit (util-linux), git.
set -eu
export DEBIAN_FRONTEND=noninteractive
need=""
for p in bubblewrap util-linux git; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
