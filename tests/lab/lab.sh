#!/usr/bin/env bash
# kvmforge test lab: real Debian hosts as systemd-nspawn containers in
# isolated network namespaces on this machine.  See tests/lab/README.md.
set -euo pipefail

# ---------------------------------------------------------------------------
# Configuration (KVMFORGE_LAB_* environment variables override)
# ---------------------------------------------------------------------------

# Debian release of the hosts.
LAB_SUITE=${KVMFORGE_LAB_SUITE:-bookworm}

# THE package list of the base image.  Changing it (or customize_base below)
# changes the image hash, so the next `image`/`up` builds a new base.
# netplan.io configures the hosts' NICs, as on an Ubuntu server. network-manager is installed
# but off, for tests that turn a host into a NetworkManager host (its polkitd needs
# libpam-systemd to configure in the chroot).
# libvirt's daemon runs in every host (networks and pools need no /dev/kvm); dnsmasq-base is the
# binary libvirt starts for its networks' DHCP, qemu-img (qemu-utils) makes qcow2 volumes.
# The jump-host services are installed but off until a test configures them: squid, ISC dhcpd and
# Kea; isc-dhcp-client and curl are the clients that prove them.
LAB_BASE_PACKAGES="systemd systemd-sysv dbus openssh-server openssh-client iproute2 sudo kmod procps python3 less iputils-ping netplan.io network-manager libpam-systemd libvirt-daemon-system libvirt-clients dnsmasq-base qemu-utils
  squid isc-dhcp-server kea-dhcp4-server isc-dhcp-client curl"
# Extra packages for a one-off image ($KVMFORGE_LAB_EXTRA_PACKAGES, space separated).
LAB_EXTRA_PACKAGES=${KVMFORGE_LAB_EXTRA_PACKAGES:-}

# First two octets of all lab networks.  Lab index K (0..127) uses
#   front network  PREFIX.(2K).0/24     controller .1, jump .2, hN .(10+N)
#   VM network     PREFIX.(2K+1).0/24   jump .1, vN .(10+N)
LAB_NET_PREFIX=${KVMFORGE_LAB_NET_PREFIX:-10.213}

LAB_CACHE=${KVMFORGE_LAB_CACHE:-/var/tmp/kvmforge-lab}      # base images
LAB_RUN_ROOT=${KVMFORGE_LAB_RUN:-/run/kvmforge-lab}          # per-lab interface files
LAB_HOSTS_ROOT=${KVMFORGE_LAB_HOSTS:-$LAB_CACHE/labs}         # per-host overlays
LAB_CGROUP=${KVMFORGE_LAB_CGROUP:-kvmforge-lab}                # top cgroup of all labs
# $KVMFORGE_LAB_BOOT_TIMEOUT: seconds until every host must accept ssh
# (default 120 + 2 per host)
LAB_DOWN_GRACE=${KVMFORGE_LAB_DOWN_GRACE:-0}                  # seconds of orderly shutdown on `down`
LAB_KILL_GRACE=${KVMFORGE_LAB_KILL_GRACE:-10}                  # ... on `kill NAME HOST`

# Bump to force an image rebuild after changes outside customize_base.
LAB_IMAGE_REV=1

LAB_KF_PASSWORD=kfpass
LAB_MAX_HOSTS=240

export LC_ALL=C
export DEBIAN_FRONTEND=noninteractive
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# the VM side (QEMU guests): image, options, spawning, reboot
# shellcheck source=tests/lab/vm.sh
. "$HERE/vm.sh"

log() { echo "lab: $*" >&2; }
die() { echo "lab: ERROR: $*" >&2; exit 1; }

usage() {
  cat >&2 <<'EOF'
usage: lab.sh image
       lab.sh vm-image
       lab.sh up NAME --hosts N [--index K] [--jump M] [--vm SPEC]...
       lab.sh down NAME
       lab.sh down-all
       lab.sh list
       lab.sh check | check-vms
       lab.sh exec NAME HOST CMD...
       lab.sh stop-sshd NAME HOST | start-sshd NAME HOST
       lab.sh rekey NAME HOST
       lab.sh unplug NAME HOST | plug NAME HOST
       lab.sh kill NAME HOST | start NAME HOST
       lab.sh reboot NAME VMHOST
SPEC (one VM q1, q2, ... per --vm): comma-separated key=value, all optional:
  mem=MiB (1024) cpus=N (2) nvme=N spare NVMe drives (0)
  bridged=N NVMe drives behind one pci-bridge (0) e1000=N (0)
  bridged_e1000=N e1000 NICs behind that pci-bridge (0) root=virtio|nvme
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
  { echo "$LAB_SUITE"; pkg_list; echo; declare -f customize_base; echo "$LAB_IMAGE_REV $LAB_KF_PASSWORD"; } \
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
  # NetworkManager stays off unless a test starts it
  chroot "$R" systemctl disable NetworkManager.service NetworkManager-wait-online.service \
    NetworkManager-dispatcher.service >/dev/null 2>&1 || true
  # so do the jump-host services, which the modules that configure them enable
  chroot "$R" systemctl disable squid.service isc-dhcp-server.service kea-dhcp4-server.service \
    >/dev/null 2>&1 || true
  # units without a purpose in a lab container
  chroot "$R" systemctl mask \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer \
    console-getty.service getty@.service container-getty@.service serial-getty@.service \
    systemd-networkd-wait-online.service systemd-pstore.service \
    systemd-journald-audit.socket systemd-logind.service >/dev/null 2>&1
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
    local try ok=""
    for try in 1 2 3; do  # downloaded packages stay in the cache dir between tries
      if debootstrap --variant=minbase --cache-dir="$LAB_CACHE/debs" \
          --include="${pkgs// /,}" "$LAB_SUITE" "$tmp" "$mirror" >"$LAB_CACHE/debootstrap.log" 2>&1; then
        ok=1; break
      fi
      tail -n 30 "$LAB_CACHE/debootstrap.log" >&2
      umount_below "$tmp"
      rm -rf --one-file-system "$tmp"
      log "debootstrap failed (try $try of 3)"
      sleep $((try * 5))
    done
    [ -n "$ok" ] || die "debootstrap failed (full log: $LAB_CACHE/debootstrap.log)"
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
      if ! grep -q "lowerdir=${old}[,:]" /proc/self/mounts; then
        log "removing old image $old"
        rm -rf --one-file-system "$old"
      fi
    done
  ) 9>"$LAB_CACHE/.image.lock"
  echo "$base"
}

# ---------------------------------------------------------------------------
# Naming, addresses, state
# ---------------------------------------------------------------------------
#   run dir      $LAB_RUN_ROOT/NAME      (key, known_hosts, inventory, pids)
#   host dirs    $LAB_HOSTS_ROOT/NAME/H  (upper, work, merged)
#   netns        kfl.NAME (bridges br0 = front, br1 = VM network)
#                kfl.NAME.H (holds H's interfaces while H is not running)
#   root link    kfl<K> (alias kvmforge-lab:NAME), controller side of front
#   cgroups      <hierarchy root>/$LAB_CGROUP/NAME/H

run_dir()   { echo "$LAB_RUN_ROOT/$1"; }
hosts_dir() { echo "$LAB_HOSTS_ROOT/$1"; }
lab_ns()    { echo "kfl.$1"; }
host_ns()   { echo "kfl.$1.$2"; }
front_net() { echo "$LAB_NET_PREFIX.$(( 2 * $1 ))"; }
vm_net()    { echo "$LAB_NET_PREFIX.$(( 2 * $1 + 1 ))"; }

# cgroup directories (one per hierarchy that tracks processes) for lab NAME
# [host H].  Anchored at the hierarchy's root, so that every caller (tests,
# CI, a shell) finds the same ones.
cg_dirs() {
  local suffix="$LAB_CGROUP/$1${2:+/$2}" mnt
  # cgroup v2 (unified, or the unified part of a hybrid setup)
  mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  [ -n "$mnt" ] && echo "$mnt/$suffix"
  # cgroup v1 name=systemd (hybrid / legacy)
  mnt=$(awk '$3 == "cgroup" && $4 ~ /(^|,)name=systemd(,|$)/ { print $2; exit }' /proc/self/mounts)
  [ -n "$mnt" ] && echo "$mnt/$suffix"
  return 0
}

# PIDs of the systemd-nspawn processes of a lab (or one host)
nspawn_pids() {
  local d f hd p
  {
    for d in $(cg_dirs "$1" "${2:-}"); do
      [ -d "$d" ] || continue
      while IFS= read -r f; do cat "$f" 2>/dev/null || true; done \
        < <(find "$d" -path '*/supervisor/cgroup.procs' 2>/dev/null)
    done
    # also by command line (in case the cgroups are gone)
    hd="$(hosts_dir "$1")/${2:+$2/}"
    for p in $(pgrep -f "^systemd-nspawn .*--directory=$hd" 2>/dev/null || true); do echo "$p"; done
  } | sort -un
}

# all processes in a lab's (or host's) cgroups
cg_pids() {
  local d
  for d in $(cg_dirs "$1" "${2:-}"); do
    [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# is PID the init (PID 1) of a container started by us?  (bash builtins only)
is_container_init() {
  local k a b c
  while read -r k a b c; do
    if [ "$k" = NSpid: ]; then [ "$a" = "$1" ] && [ "$b" = 1 ] && [ -z "$c" ]; return; fi
  done 2>/dev/null <"/proc/$1/status"
  return 1
}

# is PID in the cgroup tree of lab NAME host HOST?  (guards against reused PIDs)
in_host_cgroup() {
  local line
  while IFS= read -r line; do
    [[ $line == *"/$LAB_CGROUP/$2/$3/"* ]] && return 0
  done 2>/dev/null <"/proc/$1/cgroup"
  return 1
}

# PID 1 of a running host container, or fail
host_leader() {
  local name=$1 host=$2 p="" c comm kids=()
  # fast path: the pid recorded at launch (nspawn's child is the container's init)
  read -r p 2>/dev/null <"$LAB_RUN_ROOT/$name/hosts/$host.pid" || true
  if [ -n "$p" ] && read -r comm 2>/dev/null <"/proc/$p/comm" && [ "$comm" = systemd-nspawn ] \
      && in_host_cgroup "$p" "$name" "$host"; then
    read -r -a kids 2>/dev/null <"/proc/$p/task/$p/children" || true
    for c in "${kids[@]}"; do
      if is_container_init "$c"; then echo "$c"; return 0; fi
    done
    return 1
  fi
  for p in $(nspawn_pids "$name" "$host"); do
    for c in $(pgrep -P "$p" 2>/dev/null || true); do
      if is_container_init "$c"; then echo "$c"; return 0; fi
    done
  done
  return 1
}

host_addr() {
  local name=$1 host=$2 a
  a=$(awk -v h="$host" '$1 == h { print $2; exit }' "$(run_dir "$name")/hosts.txt" 2>/dev/null || true)
  [ -n "$a" ] || die "no host '$host' in lab '$name'"
  echo "$a"
}

need_lab() { [ -f "$(run_dir "$1")/index" ] || die "no lab '$1' (no $(run_dir "$1")/index)"; }
need_host() { need_lab "$1"; [ -d "$(hosts_dir "$1")/$2" ] || die "no host '$2' in lab '$1'"; }

raise_sysctl() {
  local cur
  cur=$(sysctl -n "$1" 2>/dev/null || echo 0)
  if [ "$cur" -lt "$2" ]; then sysctl -qw "$1=$2" || log "could not raise $1"; fi
}

strip_ansi() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

ssh_base() {  # RUN [any-host-key]: client options for lab connections
  local run=$1
  if [ -n "${2:-}" ]; then
    echo -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no
  else
    echo -o UserKnownHostsFile="$run/known_hosts" -o StrictHostKeyChecking=yes
  fi
  echo -F /dev/null -i "$run/id_ed25519" -o IdentitiesOnly=yes \
    -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------

allocate_index() {  # NAME WANTED -> prints index; creates the run dir under the lock
  local name=$1 want=$2
  mkdir -p "$LAB_RUN_ROOT"
  (
    flock 9
    local used=" " d k
    for d in "$LAB_RUN_ROOT"/*/index; do
      [ -f "$d" ] && used+="$(cat "$d") "
    done
    in_use() {
      [[ $used == *" $1 "* ]] && return 0
      ip link show "kfl$1" >/dev/null 2>&1 && return 0
      ip -4 -o addr show | grep -qE "inet ($(front_net "$1")|$(vm_net "$1"))\." && return 0
      ip -4 route show exact "$(front_net "$1").0/24" | grep -q . && return 0
      return 1
    }
    if [ -n "$want" ]; then
      in_use "$want" && { echo "lab: ERROR: lab index $want is in use" >&2; exit 1; }
      k=$want
    else
      k=""
      for d in $(seq 1 127); do
        if ! in_use "$d"; then k=$d; break; fi
      done
      [ -n "$k" ] || { echo "lab: ERROR: no free lab index" >&2; exit 1; }
    fi
    if [ -e "$LAB_RUN_ROOT/$name/index" ]; then
      echo "lab: ERROR: lab '$name' is being started by someone else" >&2; exit 1
    fi
    mkdir -p "$LAB_RUN_ROOT/$name/hosts"
    echo "$k" >"$LAB_RUN_ROOT/$name/index"
    echo "$k"
  ) 9>"$LAB_RUN_ROOT/.lock"
}

# `ip -n kfl.NAME -b` commands creating HOST's veth pairs: ethN in the
# host's netns, HOST-N on the bridge (br0 front, br1 VM network)
host_bridges() {  # HOST: the bridges of its NICs, in order
  case $1 in
    jump|q*) echo br0 br1 ;;
    v*) echo br1 ;;
    *) echo br0 ;;
  esac
}

host_link_cmds() {  # NAME HOST
  local name=$1 host=$2 bridges i
  read -r -a bridges <<<"$(host_bridges "$host")"
  for i in "${!bridges[@]}"; do
    echo "link add $host-$i type veth peer name eth$i netns $(host_ns "$name" "$host")"
    echo "link set $host-$i master ${bridges[$i]} up"
  done
}

# write everything a host needs into its overlay
prepare_host() {  # NAME HOST BASE then "ifname=addr/24" ...
  local name=$1 host=$2 base=$3; shift 3
  local hd run m ifc i
  hd="$(hosts_dir "$name")/$host"
  run=$(run_dir "$name")
  mkdir -p "$hd/upper" "$hd/work" "$hd/merged"
  mount -t overlay "kfl.$name.$host" -o "lowerdir=$base,upperdir=$hd/upper,workdir=$hd/work" "$hd/merged"
  m="$hd/merged"
  echo "$host" >"$m/etc/hostname"
  { printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$host"
    awk '{ printf "%s\t%s\n", $2, $1 }' "$run/hosts.txt"; } >"$m/etc/hosts"
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$m/etc/machine-id"; echo >>"$m/etc/machine-id"
  rm -f "$m"/etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f "$m/etc/ssh/ssh_host_ed25519_key"
  # the lab key for root, kf and kfnopw
  install -m 0600 "$run/id_ed25519.pub" "$m/root/.ssh/authorized_keys"
  local u ids
  for u in kf kfnopw; do
    ids=$(awk -F: -v u="$u" '$1 == u { print $3 ":" $4 }' "$m/etc/passwd")
    install -m 0600 -o "${ids%%:*}" -g "${ids##*:}" "$run/id_ed25519.pub" "$m/home/$u/.ssh/authorized_keys"
  done
  # the NICs are configured by netplan, as on an Ubuntu server (its generator turns this into
  # systemd-networkd files at boot)
  mkdir -p "$m/etc/netplan"
  {
    printf 'network:\n  version: 2\n  renderer: networkd\n  ethernets:\n'
    for ifc in "$@"; do
      printf '    %s:\n      addresses: [%s]\n      link-local: []\n      accept-ra: false\n' "${ifc%%=*}" "${ifc#*=}"
    done
  } >"$m/etc/netplan/10-lab.yaml"
  chmod 0600 "$m/etc/netplan/10-lab.yaml"
  printf '%s ' "$@" >"$run/hosts/$host.ifaces"
}

# start one host's container in the background
launch_host() {  # NAME HOST
  local name=$1 host=$2 run d
  run=$(run_dir "$name")
  for d in $(cg_dirs "$name" "$host"); do
    # leftovers of nspawn's sub-cgroups from an earlier run of this host
    [ -d "$d" ] && find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    mkdir -p "$d"
  done
  setsid "$BASH" "$HERE/lab.sh" _spawn "$name" "$host" </dev/null >"$run/hosts/$host.console" 2>&1 &
  echo $! >"$run/hosts/$host.pid"
}

# (internal) exec systemd-nspawn for one host; stdio already redirected
cmd__spawn() {
  local name=$1 host=$2 hd d ifc nics=()
  hd="$(hosts_dir "$name")/$host"
  for d in $(cg_dirs "$name" "$host"); do echo $$ >"$d/cgroup.procs"; done
  if is_vm_host "$host"; then vm_spawn "$name" "$host"; fi
  for ifc in $(cat "$(run_dir "$name")/hosts/$host.ifaces"); do
    nics+=("--network-interface=${ifc%%=*}")
  done
  # nspawn runs in the host's netns and moves the interfaces into the
  # container's private netns.  /sys is made read-only for nspawn only, so it
  # does not wait for udev (there is none) to initialize those interfaces.
  # shellcheck disable=SC2016
  exec nsenter --net="/run/netns/$(host_ns "$name" "$host")" \
    unshare --mount --propagation=private \
    "$BASH" -c 'mount -o remount,bind,ro /sys && exec "$@"' spawn \
    systemd-nspawn --quiet --boot --register=no --keep-unit \
      --directory="$hd/merged" --machine="$host" \
      --private-network "${nics[@]}" \
      --resolv-conf=off --timezone=off --link-journal=no --console=read-only
}

host_diag() {  # NAME HOST: print what is known about a host that did not come up
  local name=$1 host=$2 run leader
  run=$(run_dir "$name")
  echo "----- $host: console (last 25 lines) -----"
  tail -n 25 "$run/hosts/$host.console" 2>/dev/null | strip_ansi || true
  if is_vm_host "$host"; then
    if [ -n "$(cg_pids "$name" "$host")" ]; then
      echo "----- $host: QEMU is running; full console: $run/hosts/$host.console -----"
    else
      echo "----- $host: QEMU is not running -----"
    fi
  elif leader=$(host_leader "$name" "$host"); then
    echo "----- $host: journal (last 40 lines) -----"
    timeout 10 nsenter -t "$leader" -m -u -i -n -p -r -w -- journalctl -n 40 --no-pager 2>&1 || true
    echo "----- $host: failed units / addresses -----"
    timeout 10 nsenter -t "$leader" -m -u -i -n -p -r -w -- systemctl --failed --no-pager 2>&1 || true
    timeout 10 nsenter -t "$leader" -m -u -i -n -p -r -w -- ip -br addr 2>&1 || true
  else
    echo "----- $host: container is not running -----"
  fi
}

sshd_listening() {  # LEADER: is something in the container's netns listening on :22?
  local f loc st
  for f in "/proc/$1/net/tcp" "/proc/$1/net/tcp6"; do
    while read -r _ loc _ st _; do
      [[ $loc == *:0016 && $st == 0A ]] && return 0
    done 2>/dev/null <"$f"
  done
  return 1
}

# Wait until every HOST accepts a key login as root.  One loop for all hosts:
# cheap /proc checks until sshd listens, then one ssh login per host.
wait_hosts() {  # NAME DEADLINE ANYKEY HOST... ; prints diagnostics and fails if any did not come up
  local name=$1 deadline=$2 anykey=$3; shift 3
  local run jump="" h addr leader st
  run=$(run_dir "$name")
  [ -f "$run/jump" ] && read -r jump <"$run/jump"
  # shellcheck disable=SC2207
  local base=($(ssh_base "$run" "$anykey"))
  mkdir -p "$run/.wait"
  rm -f "$run/.wait/"*
  declare -A addrs=() leaders=() checking=() next=()
  while read -r h addr; do addrs[$h]=$addr; done <"$run/hosts.txt"
  local pending=("$@") left dead=() ready t_start
  t_start=$(( $(now) + 3 ))  # QEMU joins its cgroup a moment after launch
  while [ ${#pending[@]} -gt 0 ] && [ "$(now)" -lt "$deadline" ]; do
    left=()
    for h in "${pending[@]}"; do
      if [ -n "${checking[$h]:-}" ]; then
        if [ -f "$run/.wait/$h" ]; then  # an ssh check finished
          read -r st <"$run/.wait/$h"; rm -f "$run/.wait/$h"
          wait "${checking[$h]}" 2>/dev/null || true
          checking[$h]=""
          [ "$st" = 0 ] && continue
        fi
        left+=("$h"); continue
      fi
      ready=""
      if is_vm_host "$h"; then
        # a VM's sshd cannot be seen from here: try ssh every 2 s while
        # QEMU runs; a QEMU that exited fails at once
        if [ "$(now)" -gt "$t_start" ] && [ -z "$(cg_pids "$name" "$h")" ]; then dead+=("$h"); continue; fi
        if [ "$(now)" -ge "${next[$h]:-0}" ]; then ready=1; next[$h]=$(( $(now) + 2 )); fi
      else
        leader=${leaders[$h]:-}
        if [ -z "$leader" ] || [ ! -d "/proc/$leader" ]; then
          leader=$(host_leader "$name" "$h") || leader=""
          leaders[$h]=$leader
        fi
        [ -n "$leader" ] && sshd_listening "$leader" && ready=1
      fi
      if [ -n "$ready" ]; then
        local proxy=()
        if [[ -n $jump && $h == v* ]]; then
          proxy=(-o "ProxyCommand=ssh ${base[*]} -W %h:%p root@$jump")
        fi
        (
          rc=0
          timeout 20 ssh "${base[@]}" "${proxy[@]}" "root@${addrs[$h]}" true </dev/null >/dev/null 2>&1 || rc=$?
          echo "$rc" >"$run/.wait/$h.tmp"; mv "$run/.wait/$h.tmp" "$run/.wait/$h"
        ) &
        checking[$h]=$!
      fi
      left+=("$h")
    done
    pending=("${left[@]}")
    [ ${#pending[@]} -gt 0 ] && sleep 0.3
  done
  # (never a bare `wait`: the containers are children of this shell too)
  for h in "${pending[@]}"; do
    if [ -n "${checking[$h]:-}" ]; then
      kill "${checking[$h]}" 2>/dev/null || true
      wait "${checking[$h]}" 2>/dev/null || true
    fi
  done
  rm -rf "$run/.wait"
  pending+=("${dead[@]}")
  if [ ${#pending[@]} -gt 0 ]; then
    for h in "${pending[@]}"; do host_diag "$name" "$h" >&2; done
    die "host(s) not reachable over ssh within the timeout: ${pending[*]} (lab $name)"
  fi
}

write_lab_files() {  # NAME: known_hosts, inventory.yaml, ssh_config, lab.env (hosts.txt exists)
  local name=$1 run hd h a jump="" idx
  run=$(run_dir "$name"); hd=$(hosts_dir "$name"); idx=$(cat "$run/index")
  [ -f "$run/jump" ] && jump=$(cat "$run/jump")
  : >"$run/known_hosts.tmp"
  while read -r h a; do
    echo "$a $(cut -d' ' -f1-2 "$(host_pubkey "$name" "$h")")" >>"$run/known_hosts.tmp"
  done <"$run/hosts.txt"
  mv "$run/known_hosts.tmp" "$run/known_hosts"

  local key="$run/id_ed25519" kh="$run/known_hosts"
  local common="-o UserKnownHostsFile=$kh -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
  {
    echo "# kvmforge test lab '$name' (index $idx), written by tests/lab/lab.sh"
    echo "all:"
    echo "  vars:"
    echo "    ansible_ssh_common_args: '$common'"
    echo "  hosts:"
    while read -r h a; do
      echo "    $h:"
      echo "      ansible_host: $a"
      echo "      ansible_user: root"
      echo "      ansible_ssh_private_key_file: $key"
      if [[ -n $jump && $h == v* ]]; then
        echo "      ansible_ssh_common_args: '$common -o ProxyCommand=\"ssh -F /dev/null -i $key $common -o BatchMode=yes -W %h:%p root@$jump\"'"
      fi
    done <"$run/hosts.txt"
    echo "  children:"
    echo "    front:"
    echo "      hosts:"
    while read -r h a; do [[ -n $jump && $h == v* ]] || echo "        $h: {}"; done <"$run/hosts.txt"
    echo "    vm:"
    if [ -n "$jump" ] && grep -q '^v' "$run/hosts.txt"; then
      echo "      hosts:"
      while read -r h a; do [[ $h == v* ]] && echo "        $h: {}"; done <"$run/hosts.txt"
    else
      echo "      hosts: {}"
    fi
    echo "    qemu:"
    if grep -q '^q' "$run/hosts.txt"; then
      echo "      hosts:"
      while read -r h a; do is_vm_host "$h" && echo "        $h: {}"; done <"$run/hosts.txt"
    else
      echo "      hosts: {}"
    fi
  } >"$run/inventory.yaml"

  {
    echo "# ssh -F $run/ssh_config HOST"
    echo "Host *"
    echo "  User root"
    echo "  IdentityFile $key"
    echo "  IdentitiesOnly yes"
    echo "  UserKnownHostsFile $kh"
    echo "  StrictHostKeyChecking yes"
    echo "  BatchMode yes"
    echo "  ConnectTimeout 10"
    echo "  LogLevel ERROR"
    while read -r h a; do
      echo "Host $h $a"
      echo "  HostName $a"
      [[ -n $jump && $h == v* ]] && echo "  ProxyJump root@$jump"
    done <"$run/hosts.txt"
  } >"$run/ssh_config"

  {
    echo "LAB_NAME=$name"
    echo "LAB_INDEX=$idx"
    echo "LAB_DIR=$run"
    echo "LAB_FRONT_NET=$(front_net "$idx").0/24"
    echo "LAB_VM_NET=$(vm_net "$idx").0/24"
    echo "LAB_CONTROLLER_ADDR=$(front_net "$idx").1"
    echo "LAB_JUMP_ADDR=$jump"
    echo "LAB_JUMP_VM_ADDR=${jump:+$(vm_net "$idx").1}"
    echo "LAB_KEY=$key"
    echo "LAB_KNOWN_HOSTS=$kh"
    echo "LAB_INVENTORY=$run/inventory.yaml"
    echo "LAB_SSH_CONFIG=$run/ssh_config"
    echo "LAB_KF_PASSWORD=$LAB_KF_PASSWORD"
  } >"$run/lab.env"
}

lab_exists() {  # anything left of lab NAME?
  local name=$1 d
  [ -e "$(run_dir "$name")" ] || [ -e "$(hosts_dir "$name")" ] && return 0
  for d in "/run/netns/$(lab_ns "$name")" "/run/netns/$(lab_ns "$name")".*; do [ -e "$d" ] && return 0; done
  for d in $(cg_dirs "$name"); do [ -d "$d" ] && return 0; done
  return 1
}

cmd_up() {
  need_root
  local name="" hosts="" index="" jump="" vms=()
  while [ $# -gt 0 ]; do
    case $1 in
      --vm) [ $# -ge 2 ] || usage; vms+=("$2"); shift 2 ;;
      --vm=*) vms+=("${1#*=}"); shift ;;
      --hosts) hosts=${2:-}; shift 2 ;;
      --hosts=*) hosts=${1#*=}; shift ;;
      --index) index=${2:-}; shift 2 ;;
      --index=*) index=${1#*=}; shift ;;
      --jump) jump=${2:-}; shift 2 ;;
      --jump=*) jump=${1#*=}; shift ;;
      -*) usage ;;
      *) [ -z "$name" ] || usage; name=$1; shift ;;
    esac
  done
  [ -n "$name" ] && [ -n "$hosts" ] || usage
  valid_name "$name"
  [[ $hosts =~ ^[0-9]+$ ]] && [ "$hosts" -le $LAB_MAX_HOSTS ] || die "--hosts must be 0..$LAB_MAX_HOSTS"
  [ -z "$index" ] || { [[ $index =~ ^[0-9]+$ ]] && [ "$index" -le 127 ]; } || die "--index must be 0..127"
  [ -z "$jump" ] || { [[ $jump =~ ^[0-9]+$ ]] && [ "$jump" -le $LAB_MAX_HOSTS ]; } || die "--jump must be 0..$LAB_MAX_HOSTS"
  [ "$hosts" -le $(( LAB_MAX_HOSTS - LAB_VM_MAX )) ] || [ ${#vms[@]} -eq 0 ] \
    || die "with VMs, --hosts must be at most $(( LAB_MAX_HOSTS - LAB_VM_MAX ))"
  [ ${#vms[@]} -le $LAB_VM_MAX ] || die "at most $LAB_VM_MAX VMs per lab"
  local spec
  for spec in "${vms[@]}"; do vm_spec_check "$spec"; done
  [ "$hosts" -gt 0 ] || [ -n "$jump" ] || [ ${#vms[@]} -gt 0 ] || die "a lab needs at least one host"

  local t0 base
  t0=$(now)
  ensure_tools
  base=$(cmd_image | tail -n 1)
  [ -f "$base/.kvmforge-lab-stamp" ] || die "no base image"
  local vmdir=""
  if [ ${#vms[@]} -gt 0 ]; then
    vmdir=$(cmd_vm_image | tail -n 1)
    [ -f "$vmdir/.kvmforge-lab-stamp" ] || die "no VM image"
  fi
  grep -qw overlay /proc/filesystems || modprobe overlay || die "overlayfs not available"
  raise_sysctl fs.inotify.max_user_instances 8192
  raise_sysctl fs.inotify.max_user_watches 1048576

  if lab_exists "$name"; then
    log "lab '$name' exists (earlier run?); tearing it down first"
    cmd_down "$name"
  fi

  local idx run hd fnet vnet
  idx=$(allocate_index "$name" "$index")
  run=$(run_dir "$name"); hd=$(hosts_dir "$name")
  fnet=$(front_net "$idx"); vnet=$(vm_net "$idx")
  UP_NAME=$name
  trap 'up_failed' EXIT

  # host list
  local h i all=()
  : >"$run/hosts.txt"
  for ((i = 1; i <= hosts; i++)); do echo "h$i $fnet.$((10 + i))" >>"$run/hosts.txt"; all+=("h$i"); done
  if [ -n "$jump" ]; then
    echo "jump $fnet.2" >>"$run/hosts.txt"; all+=(jump)
    echo "$fnet.2" >"$run/jump"
    for ((i = 1; i <= jump; i++)); do echo "v$i $vnet.$((10 + i))" >>"$run/hosts.txt"; all+=("v$i"); done
  fi
  # VMs: qN on the front network (and lan1 on the VM network), .(250+N)
  for ((i = 1; i <= ${#vms[@]}; i++)); do echo "q$i $fnet.$((250 + i))" >>"$run/hosts.txt"; all+=("q$i"); done

  # lab client key
  ssh-keygen -q -t ed25519 -N '' -C "kvmforge-lab-$name" -f "$run/id_ed25519"
  chmod 600 "$run/id_ed25519"

  # networks: lab netns with the bridges, controller link, one netns per host
  local lns; lns=$(lab_ns "$name")
  ip netns add "$lns"
  {
    echo "link set lo up"
    echo "link add br0 type bridge"
    echo "link set br0 up"
    if [ -n "$jump" ] || [ ${#vms[@]} -gt 0 ]; then echo "link add br1 type bridge"; echo "link set br1 up"; fi
  } | ip -n "$lns" -b -
  ip link add "kfl$idx" type veth peer name ctl netns "$lns"
  ip link set "kfl$idx" alias "kvmforge-lab:$name"
  sysctl -qw "net.ipv6.conf.kfl$idx.disable_ipv6=1" 2>/dev/null || true
  ip addr add "$fnet.1/24" dev "kfl$idx"
  ip link set "kfl$idx" up
  ip -n "$lns" link set ctl master br0 up
  # nothing for the lab prefix ever leaves the machine (e.g. the VM network)
  ip route replace unreachable "$LAB_NET_PREFIX.0.0/16"

  for h in "${all[@]}"; do is_vm_host "$h" || echo "netns add $(host_ns "$name" "$h")"; done | ip -b -
  for h in "${all[@]}"; do
    if is_vm_host "$h"; then vm_link_cmds "$name" "$h"; else host_link_cmds "$name" "$h"; fi
  done | ip -n "$lns" -b -

  # overlays
  mkdir -p "$hd"
  while read -r h i; do
    if is_vm_host "$h"; then
      prepare_vm "$name" "$h" "$vmdir" "${vms[$(( ${h#q} - 1 ))]}" "lan0=$i/24" "lan1=$vnet.${i##*.}/24"
    elif [ "$h" = jump ]; then
      prepare_host "$name" "$h" "$base" "eth0=$i/24" "eth1=$vnet.1/24"
    else
      prepare_host "$name" "$h" "$base" "eth0=$i/24"
    fi
  done <"$run/hosts.txt"
  write_lab_files "$name"

  # boot
  local t1; t1=$(now)
  for h in "${all[@]}"; do launch_host "$name" "$h"; done
  local timeout=${KVMFORGE_LAB_BOOT_TIMEOUT:-$(( 120 + 2 * ${#all[@]} ))}
  if [ ${#vms[@]} -gt 0 ] && [ -z "${KVMFORGE_LAB_BOOT_TIMEOUT:-}" ]; then
    timeout=$(( ${KVMFORGE_LAB_VM_BOOT_TIMEOUT:-300} + 60 * (${#vms[@]} - 1) ))
  fi
  wait_hosts "$name" "$(( $(now) + timeout ))" "" "${all[@]}"
  trap - EXIT
  echo "up" >"$run/state"
  log "lab '$name': ${#all[@]} host(s) up (${#vms[@]} VM(s); front $fnet.0/24${jump:+, vm $vnet.0/24}); boot $(( $(now) - t1 ))s, total $(( $(now) - t0 ))s"
  echo "$run"
}

up_failed() {
  local rc=$?
  if [ "${KVMFORGE_LAB_KEEP_ON_FAILURE:-0}" = 1 ]; then
    log "up failed; lab '$UP_NAME' kept for inspection (KVMFORGE_LAB_KEEP_ON_FAILURE=1)"
  else
    log "up failed; tearing down lab '$UP_NAME'"
    cmd_down "$UP_NAME" || true
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------

kill_and_wait() {  # NAME HOST-or-"" GRACE: stop containers (orderly for GRACE seconds, then by force)
  local name=$1 host=$2 grace=$3 pids p deadline d
  pids=$(nspawn_pids "$name" "$host")
  if [ -n "$pids" ] && [ "$grace" -gt 0 ]; then
    # SIGTERM makes nspawn ask the container's systemd for an orderly poweroff
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    deadline=$(( $(now) + grace ))
    while [ "$(now)" -lt "$deadline" ]; do
      p=""
      for d in $pids; do kill -0 "$d" 2>/dev/null && p=1 && break; done
      [ -z "$p" ] && break
      sleep 0.2
    done
  fi
  # whatever is left, by force
  for d in $(cg_dirs "$name" "$host"); do
    [ -f "$d/cgroup.kill" ] && { echo 1 >"$d/cgroup.kill"; } 2>/dev/null || true
  done
  for p in $(cg_pids "$name" "$host") $(nspawn_pids "$name" "$host"); do
    kill -KILL "$p" 2>/dev/null || true
  done
  deadline=$(( $(now) + 10 ))
  while [ -n "$(cg_pids "$name" "$host")" ] && [ "$(now)" -lt "$deadline" ]; do sleep 0.1; done
  for d in $(cg_dirs "$name" "$host"); do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

cmd_down() {
  need_root
  local name=${1:-}
  [ -n "$name" ] || usage
  valid_name "$name"
  local run hd ns p l idx
  run=$(run_dir "$name"); hd=$(hosts_dir "$name")
  kill_and_wait "$name" "" "$LAB_DOWN_GRACE"
  # processes still inside the lab's network namespaces
  for ns in "/run/netns/$(lab_ns "$name")" "/run/netns/$(lab_ns "$name")".*; do
    [ -e "$ns" ] || continue
    for p in $(ip netns pids "${ns##*/}" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  umount_below "$hd"
  for ns in "/run/netns/$(lab_ns "$name")".* "/run/netns/$(lab_ns "$name")"; do
    [ -e "$ns" ] || continue
    ip netns del "${ns##*/}" 2>/dev/null || { umount -l "$ns" 2>/dev/null; rm -f "$ns"; } || true
  done
  # the controller link (normally gone with the lab netns)
  for l in /sys/class/net/kfl*; do
    [ -e "$l/ifalias" ] || continue
    [ "$(cat "$l/ifalias" 2>/dev/null)" = "kvmforge-lab:$name" ] && ip link del "${l##*/}" 2>/dev/null || true
  done
  if [ -f "$run/index" ]; then
    idx=$(cat "$run/index")
    if [ -e "/sys/class/net/kfl$idx" ] && [ "$(cat "/sys/class/net/kfl$idx/ifalias" 2>/dev/null)" = "kvmforge-lab:$name" ]; then
      ip link del "kfl$idx" 2>/dev/null || true
    fi
  fi
  if grep -q " ${hd}[/ ]" /proc/self/mounts; then
    die "mounts below $hd are still busy; not removing it"
  fi
  rm -rf --one-file-system "$hd" "$run"
  for d in $(cg_dirs "$name"); do [ -d "$d" ] && rmdir "$d" 2>/dev/null || true; done
  # last lab gone: drop the guard route and our empty parent dirs
  if ! ls -d "$LAB_RUN_ROOT"/*/ >/dev/null 2>&1; then
    for d in $(cg_dirs ""); do rmdir "$d" 2>/dev/null || true; done
    if ! grep -qs '^kvmforge-lab:' /sys/class/net/kfl*/ifalias; then
      ip route del unreachable "$LAB_NET_PREFIX.0.0/16" 2>/dev/null || true
    fi
  fi
  log "lab '$name' is down"
}

# every lab this machine has (also half-torn-down ones)
all_lab_names() {
  local d
  {
    for d in "$LAB_RUN_ROOT"/*/ "$LAB_HOSTS_ROOT"/*/; do [ -d "$d" ] && basename "$d"; done
    for d in $(cg_dirs ""); do
      [ -d "$d" ] && find "$d" -mindepth 1 -maxdepth 1 -type d -printf '%f\n'
    done
  } | sort -u
}

cmd_down_all() {
  local n
  for n in $(all_lab_names); do
    [[ $n =~ ^[A-Za-z0-9_-]{1,40}$ ]] && cmd_down "$n"
  done
  log "no labs left"
}

# ---------------------------------------------------------------------------
# per-host helpers
# ---------------------------------------------------------------------------

cmd_exec() {
  need_root
  [ $# -ge 3 ] || usage
  local name=$1 host=$2 leader; shift 2
  need_host "$name" "$host"
  if is_vm_host "$host"; then  # a VM has no way in but ssh
    exec "$BASH" -c "$(declare -f lab_ssh ssh_base run_dir host_addr die); LAB_RUN_ROOT='$LAB_RUN_ROOT'; lab_ssh \"\$@\"" \
      _ "$name" "$host" "$(printf '%q ' "$@")"
  fi
  leader=$(host_leader "$name" "$host") || die "host '$host' of lab '$name' is not running"
  exec nsenter -t "$leader" -m -u -i -n -p -r -w -- \
    /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb USER=root LOGNAME=root "$@"
}

cmd_stop_sshd() {
  [ $# -eq 2 ] || usage
  need_host "$1" "$2"
  ( cmd_exec "$1" "$2" systemctl stop ssh.socket ssh.service )
  log "sshd stopped on $2"
}

cmd_start_sshd() {
  [ $# -eq 2 ] || usage
  need_host "$1" "$2"
  is_vm_host "$2" && die "start-sshd: a VM ($2) is reached only over ssh; use reboot, or kill and start"
  ( cmd_exec "$1" "$2" systemctl start ssh.service )
  log "sshd started on $2"
}

cmd_rekey() {
  [ $# -eq 2 ] || usage
  local name=$1 host=$2 m addr
  need_host "$name" "$host"
  m="$(hosts_dir "$name")/$host/merged"
  addr=$(host_addr "$name" "$host")
  if is_vm_host "$host"; then
    # the new key goes in over ssh; the seed copy is updated too, so the
    # files stay in step with what the VM has
    m="$(hosts_dir "$name")/$host/seed/files"
    rm -f "$m"/etc/ssh/ssh_host_ed25519_key "$m"/etc/ssh/ssh_host_ed25519_key.pub
    ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f "$m/etc/ssh/ssh_host_ed25519_key"
    # shellcheck disable=SC2046
    ssh $(ssh_base "$(run_dir "$name")") "root@$addr" \
      'umask 077; cat >/etc/ssh/ssh_host_ed25519_key.new && mv /etc/ssh/ssh_host_ed25519_key.new /etc/ssh/ssh_host_ed25519_key' \
      <"$m/etc/ssh/ssh_host_ed25519_key" || die "rekey: cannot reach $host"
    # shellcheck disable=SC2046
    ssh $(ssh_base "$(run_dir "$name")") "root@$addr" \
      "printf '%s\n' '$(cat "$m/etc/ssh/ssh_host_ed25519_key.pub")' >/etc/ssh/ssh_host_ed25519_key.pub && systemctl restart ssh.service" \
      </dev/null || die "rekey: cannot restart sshd on $host"
    log "new ssh host key on $host; $(run_dir "$name")/known_hosts still has the old one"
    echo "$addr $(cut -d' ' -f1-2 "$m/etc/ssh/ssh_host_ed25519_key.pub")"
    return 0
  fi
  rm -f "$m"/etc/ssh/ssh_host_ed25519_key "$m"/etc/ssh/ssh_host_ed25519_key.pub
  ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f "$m/etc/ssh/ssh_host_ed25519_key"
  ( cmd_exec "$name" "$host" systemctl restart ssh.service )
  log "new ssh host key on $host; $(run_dir "$name")/known_hosts still has the old one"
  echo "$addr $(cut -d' ' -f1-2 "$m/etc/ssh/ssh_host_ed25519_key.pub")"
}

cmd_unplug() {  # detach a host's NICs from their bridges: it stops answering at all
  [ $# -eq 2 ] || usage
  need_host "$1" "$2"
  local l
  for l in $(ip -n "$(lab_ns "$1")" -o link show | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep -E "^$2-[0-9]+$"); do
    ip -n "$(lab_ns "$1")" link set "$l" nomaster
  done
  log "$2 unplugged"
}

cmd_plug() {
  [ $# -eq 2 ] || usage
  need_host "$1" "$2"
  local bridges i
  read -r -a bridges <<<"$(host_bridges "$2")"
  for i in "${!bridges[@]}"; do
    ip -n "$(lab_ns "$1")" link set "$2-$i" master "${bridges[$i]}"
  done
  log "$2 plugged in"
}

cmd_kill() {  # stop one host's container (the host disappears)
  need_root
  [ $# -eq 2 ] || usage
  need_host "$1" "$2"
  kill_and_wait "$1" "$2" "$LAB_KILL_GRACE"
  log "$2 stopped"
}

cmd_start() {  # boot a stopped host again
  need_root
  [ $# -eq 2 ] || usage
  need_host "$1" "$2"
  host_leader "$1" "$2" >/dev/null && die "$2 is running"
  # a container that was killed hard takes its interfaces with it: recreate them
  if ! is_vm_host "$2" && ! ip -n "$(host_ns "$1" "$2")" link show eth0 >/dev/null 2>&1; then
    local l
    for l in $(ip -n "$(lab_ns "$1")" -o link show | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep -E "^$2-[0-9]+$" || true); do
      ip -n "$(lab_ns "$1")" link del "$l"
    done
    host_link_cmds "$1" "$2" | ip -n "$(lab_ns "$1")" -b -
  fi
  launch_host "$1" "$2"
  local t=${KVMFORGE_LAB_BOOT_TIMEOUT:-120}
  is_vm_host "$2" && t=${KVMFORGE_LAB_VM_BOOT_TIMEOUT:-300}
  wait_hosts "$1" "$(( $(now) + t ))" anykey "$2"
  log "$2 started"
}

cmd_list() {
  local d name idx n r
  for d in "$LAB_RUN_ROOT"/*/; do
    [ -f "$d/index" ] || continue
    name=$(basename "$d")
    idx=$(cat "$d/index")
    n=$(wc -l <"$d/hosts.txt" 2>/dev/null || echo 0)
    r=$(nspawn_pids "$name" | wc -l)
    printf '%s\tindex=%s\tfront=%s.0/24\thosts=%s\trunning=%s\tdir=%s\n' \
      "$name" "$idx" "$(front_net "$idx")" "$n" "$r" "${d%/}"
  done
}

# Can labs run here at all?  Exit 0 if yes; otherwise the reason, exit 3.
cmd_check() {
  local why=""
  if [ "$(id -u)" != 0 ]; then why="not root"
  elif ! ensure_tools >/dev/null 2>&1; then why="required tools missing and apt-get install failed"
  elif ! { grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null; }; then why="overlayfs not available"
  elif ! ip netns add "kfl-check-$$" 2>/dev/null; then why="cannot create network namespaces"
  elif [ -z "$(cg_dirs check)" ]; then ip netns del "kfl-check-$$"; why="no writable cgroup hierarchy"
  else
    ip netns del "kfl-check-$$"
    local d ok=1
    for d in $(cg_dirs "check-$$"); do
      if mkdir -p "$d" 2>/dev/null; then rmdir "$d" "${d%/*}" 2>/dev/null || true; else ok=""; fi
    done
    [ -n "$ok" ] || why="cannot create cgroups"
  fi
  if [ -n "$why" ]; then echo "lab: cannot run here: $why" >&2; exit 3; fi
  echo "ok"
}

main() {
  [ $# -ge 1 ] || usage
  local cmd=$1; shift
  case $cmd in
    image) [ $# -eq 0 ] || usage; cmd_image ;;
    vm-image) [ $# -eq 0 ] || usage; cmd_vm_image ;;
    check-vms) cmd_check_vms ;;
    reboot) cmd_reboot "$@" ;;
    up) cmd_up "$@" ;;
    down) [ $# -eq 1 ] || usage; cmd_down "$1" ;;
    down-all) [ $# -eq 0 ] || usage; need_root; cmd_down_all ;;
    list) cmd_list ;;
    check) cmd_check ;;
    exec) cmd_exec "$@" ;;
    stop-sshd) cmd_stop_sshd "$@" ;;
    start-sshd) cmd_start_sshd "$@" ;;
    rekey) cmd_rekey "$@" ;;
    unplug) cmd_unplug "$@" ;;
    plug) cmd_plug "$@" ;;
    kill) cmd_kill "$@" ;;
    start) cmd_start "$@" ;;
    _spawn) cmd__spawn "$@" ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"
