# kvmforge test lab, VM side: QEMU guests next to the nspawn containers.
# Sourced by lab.sh; see tests/lab/README.md ("VM hosts").
#
# Containers share the controller's kernel, so they cannot test anything that
# needs a kernel or devices of its own (VLANs, vfio, hugepages, grub and
# reboots, netplan apply).  These guests can: each one is a real Debian
# bookworm machine booted through SeaBIOS and grub from a partitioned disk,
# under QEMU's software emulation (TCG; /dev/kvm here only runs PVM guests).
# shellcheck shell=bash

# THE package list of the VM image.  Changing it (or the functions that are
# hashed in vm_image_hash) builds a new image.
LAB_VM_PACKAGES="systemd systemd-sysv dbus udev openssh-server iproute2 sudo kmod procps python3 less iputils-ping
  libpam-systemd linux-image-amd64 initramfs-tools grub-pc-bin grub2-common netplan.io network-manager pciutils e2fsprogs
  libvirt-daemon-system libvirt-clients dnsmasq-base qemu-utils lvm2"
# Bump to force a VM image rebuild after changes outside the hashed functions.
LAB_VM_IMAGE_REV=1
LAB_VM_DISK_SIZE=${KVMFORGE_LAB_VM_DISK_SIZE:-3G}
# Root file system UUID of the image (fixed, so fstab and grub.cfg do not
# depend on the build).  Every VM has its own copy-on-write overlay anyway.
LAB_VM_ROOT_UUID=6b1f3c2e-9d7a-4c55-8f0e-6b766d6c6162
LAB_VM_MAX=4            # VMs per lab: q1..q4 at .251-.254 of the lab networks
# mitigations=off: under TCG every page-table-isolation TLB flush is costly,
# and the guests run nothing untrusted; it roughly halves boot time.
# no_timer_check: under emulation on a loaded machine the kernel's IO-APIC timer check can
# time out and panic the boot ("timer doesn't work through Interrupt-remapped IO-APIC").
LAB_VM_GRUB_CMDLINE="console=ttyS0,115200n8 intel_iommu=on iommu=pt mitigations=off no_timer_check"

vm_pkg_list() {
  # shellcheck disable=SC2086
  printf '%s\n' $LAB_VM_PACKAGES | sort -u | tr '\n' ' ' | sed 's/ $//'
}

vm_image_hash() {
  { echo "vm $LAB_SUITE"; vm_pkg_list; echo; declare -f customize_base customize_vm build_vm_disk
    echo "$LAB_VM_IMAGE_REV $LAB_KF_PASSWORD $LAB_VM_DISK_SIZE $LAB_VM_ROOT_UUID $LAB_VM_GRUB_CMDLINE"; } \
    | sha256sum | cut -c1-16
}

is_vm_host() { [[ $1 =~ ^q[0-9]+$ ]]; }

ensure_vm_tools() {
  local missing=() c
  for c in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils sfdisk:fdisk \
           losetup:mount mkfs.ext4:e2fsprogs; do
    command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}")
  done
  [ -e /usr/share/seabios/bios-256k.bin ] || missing+=(seabios)
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$LAB_CACHE"
  (
    flock 8
    log "installing: ${missing[*]}"
    apt-get update -qq >&2 || log "apt-get update failed (continuing)"
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
      "${missing[@]}" >&2
  ) 8>"$LAB_CACHE/.tools.lock"
  for c in qemu-system-x86_64 qemu-img sfdisk losetup mkfs.ext4; do
    command -v "$c" >/dev/null 2>&1 || die "tool $c still missing after apt-get install"
  done
}

# Can VMs run here?  Exit 0 if yes; otherwise the reason, exit 3.
cmd_check_vms() {
  local why=""
  if [ "${KVMFORGE_LAB_VMS:-1}" = 0 ]; then why="KVMFORGE_LAB_VMS=0"
  elif [ "$(id -u)" != 0 ]; then why="not root"
  elif ! ensure_vm_tools >/dev/null 2>&1; then why="qemu-system-x86 (or the image tools) missing and apt-get install failed"
  elif [ ! -c /dev/net/tun ]; then why="no /dev/net/tun (tap devices)"
  elif ! [ -e /dev/loop-control ] && ! modprobe loop 2>/dev/null; then why="no loop devices (needed to build the disk image)"
  elif ! timeout 20 qemu-system-x86_64 -accel tcg -machine q35 -nodefaults -display none \
         -monitor none -serial none -S -no-user-config -daemonize -pidfile "/tmp/kfl-check-$$.pid" \
         >/dev/null 2>&1; then why="qemu-system-x86_64 cannot start a TCG machine"
  fi
  if [ -f "/tmp/kfl-check-$$.pid" ]; then kill "$(cat "/tmp/kfl-check-$$.pid")" 2>/dev/null || true; rm -f "/tmp/kfl-check-$$.pid"; fi
  if [ -n "$why" ]; then echo "lab: VMs cannot run here: $why" >&2; exit 3; fi
  echo "ok"
}

# What makes a debootstrapped tree (already through customize_base) a VM.
customize_vm() {
  local R=$1
  cat >"$R/etc/fstab" <<EOF
UUID=$LAB_VM_ROOT_UUID / ext4 errors=remount-ro 0 1
EOF
  # grub reads this; update-grub in the guest turns it into /boot/grub/grub.cfg
  cat >"$R/etc/default/grub" <<EOF
# kvmforge test lab VM.  Run update-grub after changing it.
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="$LAB_VM_GRUB_CMDLINE"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
GRUB_DISABLE_RECOVERY=true
EOF
  # NetworkManager is there for the modules that drive it, but leaves every
  # NIC alone until a test says otherwise (netplan/networkd own the lab NICs)
  mkdir -p "$R/etc/NetworkManager/conf.d"
  cat >"$R/etc/NetworkManager/conf.d/90-kvmforge-lab.conf" <<'EOF'
# kvmforge test lab: manage nothing unless a test changes this
[main]
no-auto-default=*
[keyfile]
unmanaged-devices=*
EOF
  # a small initramfs (only what finds the root disk) unpacks and boots much
  # faster under emulation than the default "most modules" one
  mkdir -p "$R/etc/initramfs-tools/conf.d"
  printf 'MODULES=list\nCOMPRESS=zstd\n' >"$R/etc/initramfs-tools/conf.d/kvmforge-lab.conf"
  printf '%s\n' virtio_pci virtio_blk nvme ext4 crc32c_generic >>"$R/etc/initramfs-tools/modules"
  chroot "$R" update-initramfs -u -k all >/dev/null 2>&1 || chroot "$R" update-initramfs -u -k all
  rm -f "$R"/boot/*.dpkg-bak "$R"/boot/*.new
  # per-VM files (host key, addresses, hostname, authorized keys) come from a
  # small "seed" disk labelled kfseed, copied in once, before udev and
  # networkd start.  Its /etc/netplan file rules every later boot; for the
  # first one (netplan's generator has already run) the seed also carries
  # what netplan would have generated from it, in /run/systemd/network.
  # Running netplan generate here instead costs a minute under emulation.
  cat >"$R/usr/local/sbin/kvmforge-lab-seed" <<'EOF'
#!/bin/sh
# Copy the per-VM files of the kvmforge lab seed disk into the root fs (once).
set -eu
[ -e /var/lib/kvmforge-lab/seeded ] && exit 0
dev=$(blkid -c /dev/null -t LABEL=kfseed -o device 2>/dev/null | head -n 1 || true)
if [ -z "$dev" ]; then echo "kvmforge-lab-seed: no seed disk"; exit 0; fi
mkdir -p /run/kvmforge-lab-seed
mount -o ro "$dev" /run/kvmforge-lab-seed
cp -a /run/kvmforge-lab-seed/files/. /
umount /run/kvmforge-lab-seed
for u in kf kfnopw; do chown -R "$u:$u" "/home/$u/.ssh"; done
hostname -F /etc/hostname
mkdir -p /var/lib/kvmforge-lab
date -u +%FT%TZ >/var/lib/kvmforge-lab/seeded
echo "kvmforge-lab-seed: applied from $dev"
EOF
  chmod 0755 "$R/usr/local/sbin/kvmforge-lab-seed"
  cat >"$R/etc/systemd/system/kvmforge-lab-seed.service" <<'EOF'
[Unit]
Description=kvmforge lab: per-VM files from the seed disk
DefaultDependencies=no
After=systemd-remount-fs.service
Before=systemd-udevd.service systemd-udev-trigger.service systemd-networkd.service ssh.service sysinit.target
ConditionPathExists=!/var/lib/kvmforge-lab/seeded

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/kvmforge-lab-seed
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
EOF
  chroot "$R" systemctl enable kvmforge-lab-seed.service >/dev/null 2>&1
  # the container image masks the serial getty; a VM's console is the serial
  # port, and a prompt there helps nobody either.  First boot must not ask.
  chroot "$R" systemctl mask systemd-firstboot.service NetworkManager-wait-online.service >/dev/null 2>&1
  chroot "$R" systemctl enable systemd-networkd.service NetworkManager.service >/dev/null 2>&1 || true
  # udev is wanted here (netplan apply, vfio, hugepages need it)
  chroot "$R" systemctl unmask systemd-udevd.service >/dev/null 2>&1 || true
  # netplan reads this before the seed arrives: nothing, so no stray config
  mkdir -p "$R/etc/netplan"
  chroot "$R" apt-get clean
}

# Make the partitioned, grub-booted disk image DISK from the tree R.
build_vm_disk() {
  local R=$1 disk=$2 size mnt="" loop_disk="" loop_part="" rootfs
  size=$LAB_VM_DISK_SIZE
  rootfs="$disk.rootfs"
  # the root file system: a 1 MiB gap for grub's core image, then one partition
  truncate -s "$size" "$disk"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$disk"
  local start_b=$((2048 * 512)) total part_b
  total=$(stat -c %s "$disk")
  part_b=$(( total - start_b ))
  rm -f "$rootfs"
  mkfs.ext4 -q -F -L kfroot -U "$LAB_VM_ROOT_UUID" -d "$R" "$rootfs" "$(( part_b / 1024 ))k"
  dd if="$rootfs" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$rootfs"
  # grub: core image into the MBR gap, modules and grub.cfg onto the root fs.
  # Partitioned loop devices (losetup -P) may not be available, so the whole
  # disk and the partition are two loop devices; grub.cfg comes from the
  # guest's own update-grub (grub-mkconfig) run in a chroot.
  loop_disk=$(losetup -f --show "$disk")
  loop_part=$(losetup -f --show -o "$start_b" "$disk")
  mnt=$(mktemp -d "$LAB_CACHE/mnt.XXXXXX")
  (
    set -e
    mount "$loop_part" "$mnt"
    for d in dev proc sys; do mount --bind "/$d" "$mnt/$d"; done
    # the guest's own grub-install (grub-pc-bin is in the image)
    chroot "$mnt" grub-install --target=i386-pc \
      --modules="part_msdos ext2 biosdisk search_fs_uuid" --force "$loop_disk" >&2
    # grub-mkconfig probes /; on a loop device it cannot see the partition
    # table, so the device part is given and only the UUID is probed
    GRUB_DEVICE_UUID=$LAB_VM_ROOT_UUID chroot "$mnt" /bin/sh -c \
      'grub-mkconfig -o /boot/grub/grub.cfg' >&2 || true
    if ! grep -q "root=UUID=$LAB_VM_ROOT_UUID" "$mnt/boot/grub/grub.cfg" 2>/dev/null; then
      write_vm_grub_cfg "$mnt"
    fi
  )
  local rc=$?
  umount_below "$mnt"
  rmdir "$mnt" 2>/dev/null || true
  losetup -d "$loop_part" 2>/dev/null || true
  losetup -d "$loop_disk" 2>/dev/null || true
  return $rc
}

# A grub.cfg of the shape grub-mkconfig writes, for when it cannot run at
# build time.  The first update-grub in the guest replaces it.
write_vm_grub_cfg() {
  local m=$1 k v
  k=$(cd "$m/boot" && ls vmlinuz-* | sort -V | tail -n 1)
  v=${k#vmlinuz-}
  cat >"$m/boot/grub/grub.cfg" <<EOF
# written by the kvmforge lab image build; update-grub replaces it
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $LAB_VM_ROOT_UUID
menuentry 'Debian GNU/Linux' {
	linux /boot/vmlinuz-$v root=UUID=$LAB_VM_ROOT_UUID ro $LAB_VM_GRUB_CMDLINE
	initrd /boot/initrd.img-$v
}
EOF
}

vm_dir() { echo "$LAB_CACHE/vm-$(vm_image_hash)"; }

cmd_vm_image() {
  need_root
  ensure_tools
  ensure_vm_tools
  mkdir -p "$LAB_CACHE"
  local dir hash
  hash=$(vm_image_hash)
  dir="$LAB_CACHE/vm-$hash"
  (
    flock 9
    if [ -f "$dir/.kvmforge-lab-stamp" ]; then exit 0; fi
    local tmp="$LAB_CACHE/vmbuild-$hash" mirror t0 pkgs try ok="" stale
    # leftovers of interrupted builds (this lock is held by every build)
    for stale in "$LAB_CACHE"/vmbuild-* "$LAB_CACHE"/mnt.*; do
      [ -d "$stale" ] || continue
      umount_below "$stale"
      rm -rf --one-file-system "$stale"
    done
    for stale in $(losetup -n -O NAME,BACK-FILE 2>/dev/null | awk -v c="$LAB_CACHE/vmbuild-" 'index($2, c) == 1 { print $1 }'); do
      losetup -d "$stale" 2>/dev/null || true
    done
    mkdir -p "$tmp" "$LAB_CACHE/debs"
    mirror=$(detect_mirror)
    pkgs=$(vm_pkg_list)
    t0=$(now)
    log "building VM image $dir ($LAB_SUITE from $mirror)"
    log "packages: $pkgs"
    for try in 1 2 3; do
      if debootstrap --variant=minbase --cache-dir="$LAB_CACHE/debs" \
          --include="${pkgs// /,}" "$LAB_SUITE" "$tmp/tree" "$mirror" >"$LAB_CACHE/vm-debootstrap.log" 2>&1; then
        ok=1; break
      fi
      tail -n 30 "$LAB_CACHE/vm-debootstrap.log" >&2
      umount_below "$tmp/tree"
      rm -rf --one-file-system "$tmp/tree"
      log "debootstrap failed (try $try of 3)"
      sleep $((try * 5))
    done
    [ -n "$ok" ] || die "debootstrap failed (full log: $LAB_CACHE/vm-debootstrap.log)"
    umount_below "$tmp/tree"
    log "VM tree bootstrapped in $(( $(now) - t0 ))s"
    customize_base "$tmp/tree"
    customize_vm "$tmp/tree"
    umount_below "$tmp/tree"
    rm -f "$tmp/tree"/boot/*.dpkg-bak "$tmp/tree"/boot/*.new
    build_vm_disk "$tmp/tree" "$tmp/disk.raw" || die "building the VM disk failed"
    rm -rf --one-file-system "$tmp/tree"
    { echo "hash=$hash"; echo "suite=$LAB_SUITE"; echo "packages=$pkgs"; echo "mirror=$mirror"; date -u +built=%FT%TZ; } \
      >"$tmp/.kvmforge-lab-stamp"
    mv "$tmp" "$dir"
    log "VM image built in $(( $(now) - t0 ))s"
    local old
    for old in "$LAB_CACHE"/vm-*; do
      [ -d "$old" ] && [ "$old" != "$dir" ] || continue
      if ! grep -qs "vm-${old##*/vm-}/disk.raw" "$LAB_HOSTS_ROOT"/*/q*/backing 2>/dev/null; then
        log "removing old VM image $old"
        rm -rf --one-file-system "$old"
      fi
    done
  ) 9>"$LAB_CACHE/.vmimage.lock"
  echo "$dir"
}

# ---------------------------------------------------------------------------
# per-VM options: --vm "mem=1024,cpus=2,nvme=1,bridged=2,e1000=1,root=virtio"
# ---------------------------------------------------------------------------

vm_spec_check() {  # SPEC: dies if malformed
  local kv k v
  local IFS=,
  for kv in $1; do
    [ -n "$kv" ] || continue
    k=${kv%%=*}; v=${kv#*=}
    [[ $kv == *=* ]] || die "--vm: '$kv' is not key=value"
    case $k in
      mem) [[ $v =~ ^[0-9]+$ ]] && [ "$v" -ge 256 ] || die "--vm mem= is MiB, at least 256" ;;
      cpus) [[ $v =~ ^[1-8]$ ]] || die "--vm cpus= must be 1..8" ;;
      nvme|bridged|e1000|bridged_e1000) [[ $v =~ ^[0-8]$ ]] || die "--vm $k= must be 0..8" ;;
      root) [[ $v == virtio || $v == nvme ]] || die "--vm root= must be virtio or nvme" ;;
      *) die "--vm: unknown option '$k' (mem cpus nvme bridged e1000 bridged_e1000 root)" ;;
    esac
  done
}

vm_opt() {  # SPECFILE KEY DEFAULT
  local v
  v=$(tr ',' '\n' <"$1" | awk -F= -v k="$2" '$1 == k { v = $2 } END { print v }')
  echo "${v:-$3}"
}

vm_mac() {  # IDX VMNUM NIC
  printf '52:54:00:%02x:%02x:%02x\n' "$1" "$2" "$3"
}

# write a VM's overlay, seed disk and spare disks
prepare_vm() {  # NAME HOST VMDIR SPEC "ifname=addr/24" ...
  local name=$1 host=$2 vmdir=$3 spec=$4; shift 4
  local hd run s idx n i ifc u
  hd="$(hosts_dir "$name")/$host"
  run=$(run_dir "$name")
  idx=$(cat "$run/index")
  n=${host#q}
  mkdir -p "$hd"
  echo "$spec" >"$run/hosts/$host.vm"
  echo "$vmdir/disk.raw" >"$hd/backing"
  qemu-img create -q -f qcow2 -F raw -b "$vmdir/disk.raw" "$hd/root.qcow2"
  s="$hd/seed/files"
  mkdir -p "$s/etc/ssh" "$s/etc/netplan" "$s/root/.ssh" "$s/home/kf/.ssh" "$s/home/kfnopw/.ssh"
  echo "$host" >"$s/etc/hostname"
  { printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$host"
    awk '{ printf "%s\t%s\n", $2, $1 }' "$run/hosts.txt"; } >"$s/etc/hosts"
  ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f "$s/etc/ssh/ssh_host_ed25519_key"
  chmod 0700 "$s/root/.ssh"
  for u in root/.ssh home/kf/.ssh home/kfnopw/.ssh; do
    install -m 0600 "$run/id_ed25519.pub" "$s/$u/authorized_keys"
  done
  chmod 0700 "$s/home/kf/.ssh" "$s/home/kfnopw/.ssh"
  {
    echo "# kvmforge test lab: $host's lab NICs (lanN = the lab's bridge N)"
    echo "network:"
    echo "  version: 2"
    echo "  renderer: networkd"
    echo "  ethernets:"
    i=0
    for ifc in "$@"; do
      echo "    ${ifc%%=*}:"
      echo "      match: { macaddress: \"$(vm_mac "$idx" "$n" "$i")\" }"
      echo "      set-name: ${ifc%%=*}"
      echo "      addresses: [ \"${ifc#*=}\" ]"
      echo "      link-local: []"
      echo "      accept-ra: false"
      i=$((i + 1))
    done
  } >"$s/etc/netplan/10-kvmforge-lab.yaml"
  chmod 0600 "$s/etc/netplan/10-kvmforge-lab.yaml"
  mkdir -p "$s/run/systemd/network"
  i=0
  for ifc in "$@"; do
    printf '[Match]\nPermanentMACAddress=%s\n\n[Link]\nName=%s\nWakeOnLan=off\n' \
      "$(vm_mac "$idx" "$n" "$i")" "${ifc%%=*}" >"$s/run/systemd/network/10-netplan-${ifc%%=*}.link"
    printf '[Match]\nMACAddress=%s\nName=%s\n\n[Network]\nLinkLocalAddressing=no\nAddress=%s\nIPv6AcceptRA=no\n' \
      "$(vm_mac "$idx" "$n" "$i")" "${ifc%%=*}" "${ifc#*=}" >"$s/run/systemd/network/10-netplan-${ifc%%=*}.network"
    i=$((i + 1))
  done
  mkfs.ext4 -q -F -L kfseed -d "$hd/seed" "$hd/seed.img" 8M
  # spare drives for passthrough tests: sparse, so their size costs nothing
  local k
  for ((k = 0; k < $(vm_opt "$run/hosts/$host.vm" nvme 0) + $(vm_opt "$run/hosts/$host.vm" bridged 0); k++)); do
    qemu-img create -q -f qcow2 "$hd/spare$k.qcow2" 1G
  done
  printf '%s ' "$@" >"$run/hosts/$host.ifaces"
}

# (internal) exec QEMU for one VM; stdio already redirected to its console file
vm_spawn() {  # NAME HOST
  local name=$1 host=$2 hd run spec idx n i ifc nics=() devs=() k
  hd="$(hosts_dir "$name")/$host"
  run=$(run_dir "$name")
  spec="$run/hosts/$host.vm"
  idx=$(cat "$run/index"); n=${host#q}
  local mem cpus nvme bridged e1000 bridged_e1000 root
  mem=$(vm_opt "$spec" mem 1024); cpus=$(vm_opt "$spec" cpus 2)
  nvme=$(vm_opt "$spec" nvme 0); bridged=$(vm_opt "$spec" bridged 0)
  e1000=$(vm_opt "$spec" e1000 0); root=$(vm_opt "$spec" root virtio)
  bridged_e1000=$(vm_opt "$spec" bridged_e1000 0)
  devs+=(-drive "if=none,id=root,file=$hd/root.qcow2,format=qcow2,cache=unsafe,discard=unmap")
  if [ "$root" = nvme ]; then
    devs+=(-device "nvme,drive=root,serial=kfroot,bootindex=0")
  else
    devs+=(-device "virtio-blk-pci,drive=root,bootindex=0")
  fi
  devs+=(-drive "if=none,id=seed,file=$hd/seed.img,format=raw,readonly=on"
         -device "virtio-blk-pci,drive=seed,serial=kfseed")
  i=0
  for ifc in $(cat "$run/hosts/$host.ifaces"); do
    nics+=(-netdev "tap,id=lan$i,ifname=$host-$i,script=no,downscript=no"
           -device "virtio-net-pci,netdev=lan$i,mac=$(vm_mac "$idx" "$n" "$i")")
    i=$((i + 1))
  done
  for ((k = 0; k < nvme; k++)); do
    devs+=(-drive "if=none,id=spare$k,file=$hd/spare$k.qcow2,format=qcow2,cache=unsafe"
           -device "nvme,drive=spare$k,serial=kfspare$k")
  done
  if [ "$bridged" -gt 0 ] || [ "$bridged_e1000" -gt 0 ]; then
    # a conventional PCI bridge: everything behind it is one IOMMU group
    devs+=(-device "pci-bridge,id=kfbridge,chassis_nr=1")
    for ((k = nvme; k < nvme + bridged; k++)); do
      devs+=(-drive "if=none,id=spare$k,file=$hd/spare$k.qcow2,format=qcow2,cache=unsafe"
             -device "nvme,drive=spare$k,serial=kfspare$k,bus=kfbridge,addr=$(( k - nvme + 1 ))")
    done
    # e1000 NICs behind the same bridge, after the drives: in their group
    for ((k = 0; k < bridged_e1000; k++)); do
      devs+=(-device "e1000,mac=$(vm_mac "$idx" "$n" $((32 + k))),bus=kfbridge,addr=$(( bridged + k + 1 ))")
    done
  fi
  for ((k = 0; k < e1000; k++)); do
    # no peer: a NIC to bind and unbind, connected to nothing
    devs+=(-device "e1000,mac=$(vm_mac "$idx" "$n" $((16 + k)))")
  done
  # A guest reboot ends this QEMU (-action reboot=shutdown) and the loop
  # starts a new one on the same disks, NICs and console: to the guest that
  # is a reboot through firmware and grub like any other.  A reset inside
  # one QEMU process boots two to three times slower under TCG than a fresh
  # process.  After a guest poweroff ("reboot: Power down" on the console)
  # QEMU is not started again: the host stays down until `start`.
  local rc boots=0
  while :; do
    boots=$((boots + 1))
    nsenter --net="/run/netns/$(lab_ns "$name")" \
      qemu-system-x86_64 -name "$host" -no-user-config -nodefaults \
        -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$mem" \
        -machine q35,kernel-irqchip=split -device intel-iommu,intremap=on \
        -display none -vga none -monitor none \
        -chardev "stdio,id=console,signal=off" -serial chardev:console \
        -action reboot=shutdown \
        -qmp "unix:$run/hosts/$host.qmp,server=on,wait=off" \
        "${devs[@]}" "${nics[@]}" </dev/null && rc=0 || rc=$?
    [ "$rc" = 0 ] || exit "$rc"
    if tail -n 5 "$run/hosts/$host.console" 2>/dev/null | grep -q 'reboot: Power down'; then
      echo "lab: $host: guest powered off"
      exit 0
    fi
    echo "lab: $host: guest reboot; QEMU starts again (boot $((boots + 1)))"
  done
}

# taps on the lab bridges, created in the lab netns (persistent, so a VM that
# is killed and started again finds them)
vm_link_cmds() {  # NAME HOST
  local host=$2 bridges i
  read -r -a bridges <<<"$(host_bridges "$host")"
  for i in "${!bridges[@]}"; do
    echo "tuntap add dev $host-$i mode tap"
    echo "link set $host-$i master ${bridges[$i]} up"
  done
}

# ssh to a host as root with the lab's key and known_hosts (for VMs, which
# have no nsenter way in)
lab_ssh() {  # NAME HOST CMD...
  local name=$1 host=$2 run addr; shift 2
  run=$(run_dir "$name")
  addr=$(host_addr "$name" "$host")
  # shellcheck disable=SC2046
  ssh $(ssh_base "$run") "root@$addr" "$@"
}

vm_boot_id() {  # NAME HOST
  timeout 20 "$BASH" -c "$(declare -f lab_ssh ssh_base run_dir host_addr die); LAB_RUN_ROOT='$LAB_RUN_ROOT'; lab_ssh \"\$@\" cat /proc/sys/kernel/random/boot_id" \
    _ "$1" "$2" </dev/null 2>/dev/null
}

# reboot a VM in place and wait until it is back with a new boot id
cmd_reboot() {
  need_root
  [ $# -eq 2 ] || usage
  local name=$1 host=$2 old new deadline t0
  need_host "$name" "$host"
  is_vm_host "$host" || die "reboot: $host is a container; only VMs (q*) reboot in place"
  t0=$(now)
  old=$(vm_boot_id "$name" "$host") || die "reboot: cannot reach $host over ssh"
  timeout 20 "$BASH" -c "$(declare -f lab_ssh ssh_base run_dir host_addr die); LAB_RUN_ROOT='$LAB_RUN_ROOT'; lab_ssh \"\$@\"" \
    _ "$name" "$host" 'systemctl reboot' </dev/null >/dev/null 2>&1 || true
  deadline=$(( $(now) + ${KVMFORGE_LAB_VM_BOOT_TIMEOUT:-300} ))
  new=""
  while [ "$(now)" -lt "$deadline" ]; do
    sleep 2
    new=$(vm_boot_id "$name" "$host") || new=""
    [ -n "$new" ] && [ "$new" != "$old" ] && break
    new=""
  done
  if [ -z "$new" ]; then
    host_diag "$name" "$host" >&2
    die "reboot: $host did not come back with a new boot id"
  fi
  log "$host rebooted in $(( $(now) - t0 ))s"
  echo "$new"
}

host_pubkey() {  # NAME HOST: the host's public ssh host key file on this side
  local hd; hd="$(hosts_dir "$1")/$2"
  if is_vm_host "$2"; then
    echo "$hd/seed/files/etc/ssh/ssh_host_ed25519_key.pub"
  else
    echo "$hd/merged/etc/ssh/ssh_host_ed25519_key.pub"
  fi
}
