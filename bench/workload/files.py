"""The benchmark workload's file contents, shared by every tool's version of it."""

PROXY = "http://192.168.121.101:3128"

FILES = {
    "/etc/sysctl.d/bridge.conf": (
        "net.bridge.bridge-nf-call-ip6tables = 0\n"
        "net.bridge.bridge-nf-call-iptables = 0\n"
        "net.bridge.bridge-nf-call-arptables = 0\n"
    ),
    "/etc/udev/rules.d/99-bridge.rules": (
        'ACTION=="add", SUBSYSTEM=="module", KERNEL=="br_netfilter", '
        'RUN+="/sbin/sysctl -p /etc/sysctl.d/bridge.conf"\n'
    ),
    "/etc/default/grub.d/98-kvm.cfg": (
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX intel_iommu=on iommu=pt"\n'
    ),
    "/etc/modprobe.d/kvm.conf": "options kvm_intel nested=1\n",
    "/etc/netplan/01-br0.yaml": (
        "network:\n"
        "  version: 2\n"
        "  ethernets:\n"
        "    eno1: {dhcp4: false}\n"
        "  bridges:\n"
        "    br0:\n"
        "      interfaces: [eno1]\n"
        "      addresses: [192.168.121.105/24]\n"
        "      routes:\n"
        "        - {to: default, via: 192.168.121.101, on-link: true}\n"
        "      nameservers: {addresses: [192.168.121.101]}\n"
        "      parameters: {stp: true, forward-delay: 4}\n"
    ),
    "/etc/modules-load.d/kvm.conf": "br_netfilter\nvfio-pci\n",
}

ENV_LINES = [
    ("http_proxy", PROXY),
    ("https_proxy", PROXY),
    ("no_proxy", "localhost,127.0.0.1,192.168.121.0/24"),
]

POOL_DIR = "/var/lib/libvirt/images"

# What a drift run changes on every host, and what a fresh host must not have.
DRIFT_FILE = "/etc/modprobe.d/kvm.conf"
