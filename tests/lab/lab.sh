#!/usr/bin/env bash
# kvmforge test lab: real Debian hosts as systemd-nspawn containers in
# isolated network namespaces on this machine.  See tests/lab/README.md.
set -euo pipefail

# ---------------------------------------------------------------------------
# Configuration (environment overrides in parentheses)
# ---------------------------------------------------------------------------

# Debian release of the hosts.
LAB_SUITE=${KVMFORGE_LAB_SUITE:-bookworm}

# THE package list of the base image.  Changing it (or customize_base below)
# changes the image hash, so the next `image`/`up` builds a new base.
LAB_BASE_PACKAGES="systemd systemd-sysv dbus openssh-server iproute2 sudo kmod procps python3 less iputils-ping"
# Extra packages for a one-off image ($KVMFORGE_LAB_EXTRA_PACKAGES, space separated).
LAB_EXTRA_PACKAGES=${KVMFORGE_LAB_EXTRA_PACKAGES:-}

# First two octets of all lab networks.  Lab index K (0..127) uses
#   front network  PREFIX.(2K).0/24     controller .1, jump .2, hN .(10+N)
#   VM network     PREFIX.(2K+1).0/24   jump .1, vN .(10+N)
LAB_NET_PREFIX=${KVMFORGE_LAB_NET_PREFIX:-10.213}

LAB_CACHE=${KVMFORGE_LAB_CACHE:-/var/tmp/kvmforge-lab}      # base images
LAB_RUN_ROOT=${KVMFORGE_LAB_RUN:-/run/kvmforge-lab}          # per-lab interface files
LAB_HOSTS_ROOT=${KVMFORGE_LAB_HOSTS:-$LAB_CACHE/labs}         # per-host overlays
LAB_BOOT_TIMEOUT=${KVMFORGE_LAB_BOOT_TIMEOUT:-180}             # seconds, whole lab
LAB_STOP_TIMEOUT=${KVMFORGE_LAB_STOP_TIMEOUT:-10}              # seconds for orderly shutdown

# Bump to force an image rebuild after changes outside customize_base.
LAB_IMAGE_REV=1

LAB_TOOLS_PACKAGES="debootstrap systemd-container openssh-client iproute2 util-linux coreutils kmod procps"
LAB_KF_PASSWORD=kfpass
LAB_MAX_HOSTS=240

export LC_ALL=C
export DEBIAN_FRONTEND=noninteractive
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "lab: $*" >&2; }
die() { echo "lab: ERROR: $*" >&2; exit 1; }

usage() {
  cat >&2 <<'EOF'
usage: lab.sh image
       lab.sh up NAME --hosts N [--index K] [--jump M]
       lab.sh down NAME
       lab.sh list
       lab.sh check
       lab.sh exec NAME HOST CMD...
       lab.sh stop-sshd NAME HOST | start-sshd NAME HOST
       lab.sh rekey NAME HOST
       lab.sh unplug NAME HOST | plug NAME HOST
       lab.sh kill NAME HOST
EOF
  exit 2
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

valid_name() {
  [[ $1 =~ ^[A-Za-z0-9_-]{1,40}$ ]] || die "bad lab name '$1' (allowed: A-Z a-z 0-9 _ -, at most 40)"
}

now() { date +%s; }

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

ensure_tools() {
  local missing=() c
  for c in debootstrap:debootstrap systemd-nspawn:systemd-container ssh:openssh-client \
           ssh-keygen:openssh-client ip:iproute2 nsenter:util-linux flock:util-linux \
           sha256sum:coreutils modprobe:kmod pgrep:procps; do
    command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$LAB_CACHE"
  (
    flock 8
    log "installing: ${missing[*]}"
    apt-get update -qq >&2 || log "apt-get update failed (continuing)"
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
      "${missing[@]}" >&2
  ) 8>"$LAB_CACHE/.tools.lock"
  for c in debootstrap systemd-nspawn ssh ssh-keygen ip nsenter flock; do
    command -v "$c" >/dev/null 2>&1 || die "tool $c still missing after apt-get install"
  done
}

# The Debian mirror apt on this machine uses for $LAB_SUITE.
detect_mirror() {
  if [ -n "${KVMFORGE_LAB_MIRROR:-}" ]; then echo "$KVMFORGE_LAB_MIRROR"; return; fi
  local f m=""
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    m=$(awk -v suite="$LAB_SUITE" '
      /^[ \t]*deb[ \t]/ {
        line=$0; sub(/^[ \t]*deb[ \t]+/,"",line)
        if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/,"",line)
        split(line,a,/[ \t]+/)
        if (a[2] == suite && a[1] ~ /^https?:\/\//) { print a[1]; exit }
      }' "$f")
    [ -n "$m" ] && break
  done
  if [ -z "$m" ]; then
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      # deb822 stanzas: Types/URIs/Suites
      m=$(awk -v suite="$LAB_SUITE" 'BEGIN { RS="" }
        {
          types=""; uris=""; suites=""; off=0
          n=split($0, l, "\n")
          for (i=1; i<=n; i++) {
            if (l[i] ~ /^Types:/)  { types=l[i];  sub(/^Types:[ \t]*/,"",types) }
            if (l[i] ~ /^URIs:/)   { uris=l[i];   sub(/^URIs:[ \t]*/,"",uris) }
            if (l[i] ~ /^Suites:/) { suites=l[i]; sub(/^Suites:[ \t]*/,"",suites) }
            if (l[i] ~ /^Enabled:[ \t]*no/) off=1
          }
          if (off || (" " types " ") !~ / deb /) next
          if ((" " suites " ") !~ (" " suite " ")) next
          k=split(uris, u, /[ \t]+/)
          for (j=1; j<=k; j++) if (u[j] ~ /^https?:\/\//) { print u[j]; exit }
        }' "$f")
      [ -n "$m" ] && break
    done
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------------------
# Base image
# ---------------------------------------------------------------------------

pkg_list() {
  # shellcheck disable=SC2086
  printf '%s\n' $LAB_BASE_PACKAGES $LAB_EXTRA_PACKAGES | sort -u | tr '\n' ' ' | sed 's/ $//'
}

image_hash() {
  { echo "$LAB_SUITE"; pkg_list; echo; declare -f customize_base; echo "$LAB_IMAGE_REV"; } \
    | sha256sum | cut -c1-16
}

base_dir() { echo "$LAB_CACHE/base-$(image_hash)"; }

# Everything that makes a debootstrapped tree a lab host.  Runs once per image.
customize_base() {
  local R=$1
  # each host gets its own keys (generated by the harness before boot)
  rm -f "$R"/etc/ssh/ssh_host_*
  mkdir -p "$R/etc/ssh/sshd_config.d"
  cat >"$R/etc/ssh/sshd_config.d/00-kvmforge-lab.conf" <<'EOF'
# kvmforge test lab
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
AllowTcpForwarding yes
HostKey /etc/ssh/ssh_host_ed25519_key
MaxStartups 200:30:400
MaxSessions 64
EOF
  # no DNS in the lab; names come from /etc/hosts
  printf '# kvmforge test lab: no DNS\n' >"$R/etc/resolv.conf"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
  # a fresh machine-id per host (written by the harness)
  : >"$R/etc/machine-id"
  rm -f "$R/var/lib/dbus/machine-id"
  ln -s /etc/machine-id "$R/var/lib/dbus/machine-id"
  # small, volatile journal
  mkdir -p "$R/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\nForwardToConsole=no\n' \
    >"$R/etc/systemd/journald.conf.d/kvmforge-lab.conf"
  rm -rf "$R/var/log/journal"
  chroot "$R" systemctl set-default multi-user.target >/dev/null
  chroot "$R" systemctl enable ssh.service systemd-networkd.service >/dev/null 2>&1
  # units without a purpose in a lab container
  chroot "$R" systemctl mask \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer \
    console-getty.service getty@.service container-getty@.service serial-getty@.service \
    systemd-networkd-wait-online.service systemd-pstore.service \
    systemd-journald-audit.socket >/dev/null 2>&1
  # users: kf needs its password for sudo, kfnopw does not
  chroot "$R" useradd -m -s /bin/bash kf
  echo "kf:$LAB_KF_PASSWORD" | chroot "$R" chpasswd
  chroot "$R" useradd -m -s /bin/bash kfnopw
  chroot "$R" usermod -p '*' kfnopw
  echo 'kf ALL=(ALL:ALL) ALL' >"$R/etc/sudoers.d/kf"
  echo 'kfnopw ALL=(ALL:ALL) NOPASSWD: ALL' >"$R/etc/sudoers.d/kfnopw"
  chmod 0440 "$R/etc/sudoers.d/kf" "$R/etc/sudoers.d/kfnopw"
  install -d -m 0700 "$R/root/.ssh"
  chroot "$R" install -d -m 0700 -o kf -g kf /home/kf/.ssh
  chroot "$R" install -d -m 0700 -o kfnopw -g kfnopw /home/kfnopw/.ssh
  # slim down
  chroot "$R" apt-get clean
  rm -rf "$R"/var/lib/apt/lists/*_Packages "$R"/var/cache/debconf/*-old "$R"/tmp/* "$R"/var/tmp/*
}

# Unmount everything below a directory (deepest first).
umount_below() {
  local dir=$1 m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir" '{ gsub(/\\040/, " ", $2); if ($2 == d || index($2, d "/") == 1) print $2 }' /proc/self/mounts | sort -r)
}

cmd_image() {
  need_root
  ensure_tools
  mkdir -p "$LAB_CACHE"
  local base hash
  hash=$(image_hash)
  base="$LAB_CACHE/base-$hash"
  (
    flock 9
    if [ -f "$base/.kvmforge-lab-stamp" ]; then
      ln -sfn "base-$hash" "$LAB_CACHE/base"
      exit 0
    fi
    local tmp="$LAB_CACHE/build-$hash" mirror t0 pkgs
    umount_below "$tmp"
    rm -rf --one-file-system "$tmp"
    mirror=$(detect_mirror)
    pkgs=$(pkg_list)
    t0=$(now)
    log "building base image $base ($LAB_SUITE from $mirror)"
    log "packages: $pkgs"
    mkdir -p "$LAB_CACHE/debs"
    if ! debootstrap --variant=minbase --cache-dir="$LAB_CACHE/debs" \
        --include="${pkgs// /,}" "$LAB_SUITE" "$tmp" "$mirror" >"$LAB_CACHE/debootstrap.log" 2>&1; then
      tail -n 30 "$LAB_CACHE/debootstrap.log" >&2
      umount_below "$tmp"
      die "debootstrap failed (full log: $LAB_CACHE/debootstrap.log)"
    fi
    umount_below "$tmp"
    customize_base "$tmp"
    umount_below "$tmp"
    { echo "hash=$hash"; echo "suite=$LAB_SUITE"; echo "packages=$pkgs"; echo "mirror=$mirror"; date -u +built=%FT%TZ; } \
      >"$tmp/.kvmforge-lab-stamp"
    mv "$tmp" "$base"
    ln -sfn "base-$hash" "$LAB_CACHE/base"
    log "base image built in $(( $(now) - t0 ))s"
    # drop older images that no running lab uses
    local old
    for old in "$LAB_CACHE"/base-*; do
      [ -d "$old" ] && [ "$old" != "$base" ] || continue
      if ! grep -q "lowerdir=$old[,:]" /proc/self/mounts; then
        log "removing old image $old"
        rm -rf --one-file-system "$old"
      fi
    done
  ) 9>"$LAB_CACHE/.image.lock"
  echo "$base"
}
