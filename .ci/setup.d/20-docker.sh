#!/bin/sh
# Docker Engine API for the docker sandbox backend's tests: Debian's podman (+ runc) serving the
# Docker API on /run/mosaic-podman.sock, and a local busybox image (no registry needed).
# Idempotent and quiet. Tests skip (with the reason) when this could not set things up.
set -eu
export DEBIAN_FRONTEND=noninteractive
SOCK=/run/mosaic-podman.sock
CONF=/etc/mosaic/containers.conf
IMAGE=localhost/mosaic-busybox:latest

need=""
for p in podman runc busybox-static curl; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

mkdir -p /etc/mosaic
cat > "$CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$CONF"

if ! curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; then
  rm -f "$SOCK"
  # from /: the service (and its conmon children) must not depend on the caller's cwd
  (cd / && nohup podman system service --time=0 "unix://$SOCK" >/var/log/mosaic-podman.log 2>&1 &)
  i=0
  while [ $i -lt 100 ] && ! curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; do
    sleep 0.1; i=$((i + 1))
  done
fi

if ! podman image exists "$IMAGE" 2>/dev/null; then
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/etc" "$root/work"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
  tar -C "$root" -c . | podman import -q - "$IMAGE" >/dev/null
  rm -rf "$root"
fi
