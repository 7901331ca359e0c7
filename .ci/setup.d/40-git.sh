#!/bin/sh
# core/git and tests/git need git >= 2.38 (merge-tree --write-tree); Debian 12 ships 2.39.
set -e
if ! command -v git >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends git ca-certificates >/dev/null
fi
git --version | awk '{ split($3, v, "."); if (v[1] < 2 || (v[1] == 2 && v[2] < 38)) { print "git >= 2.38 required, found " $3; exit 1 } }'
