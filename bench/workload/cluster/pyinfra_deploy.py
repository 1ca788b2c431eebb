# The jumphost-cluster job for pyinfra, with its operations (files.template, server.sysctl,
# systemd.service, apt.packages, server.user_authorized_keys) and server.shell where it has none
# (ssh-keygen, netplan, virsh). Same topology and end state as playbooks/jumphost-cluster.yaml
# plus the benchmark's dir pool and grub arguments. Host data comes from the inventory the
# benchmark writes.
import io
import os

from pyinfra import host, inventory
from pyinfra.facts.files import File
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, python, server, systemd

T = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
d = host.data

if "jumphost" in host.groups:
    apt.packages(name="squid and dhcpd are installed", packages=["squid", "isc-dhcp-server"])

    squid = files.template(name="squid serves the VM network", src=f"{T}/squid.conf.j2",
                           dest="/etc/squid/squid.conf", mode="644",
                           vm_network=d.vm_network, jumphost_vm_address=d.jumphost_vm_address,
                           proxy_port=d.proxy_port)
    systemd.service(name="squid runs", service="squid", running=True, enabled=True)
    systemd.service(name="squid reloads its configuration", service="squid", reloaded=True,
                    _if=squid.did_change)

    conf = files.template(name="DHCP for the VM network", src=f"{T}/dhcpd.conf.j2",
                          dest="/etc/dhcp/dhcpd.conf", mode="644",
                          vm_subnet=d.vm_subnet, vm_netmask=d.vm_netmask, dhcp_range=d.dhcp_range,
                          jumphost_vm_address=d.jumphost_vm_address)
    nic = files.template(name="dhcpd serves the VM NIC", src=f"{T}/isc-dhcp-server.j2",
                         dest="/etc/default/isc-dhcp-server", mode="644",
                         jumphost_vm_nic=d.jumphost_vm_nic)
    # isc-dhcp-server is a SysV script, enabled by its package: pyinfra's systemd facts see its
    # generated unit as not enabled and would "enable" it again on every run.
    systemd.service(name="dhcpd runs", service="isc-dhcp-server", running=True)
    systemd.service(name="dhcpd restarts with its new configuration", service="isc-dhcp-server",
                    restarted=True, _if=lambda: conf.did_change() or nic.did_change())

    for kvm in inventory.get_group("kvm_hosts"):
        kdir = f"/etc/tunnels/{kvm.name}"
        key = f"{kdir}/id_ed25519"
        files.directory(name=f"a directory for tunnel {kvm.name}", path=kdir, mode="700")
        if not host.get_fact(File, path=key):
            server.shell(name=f"a key for tunnel {kvm.name}",
                         commands=[f"ssh-keygen -q -t ed25519 -N '' -C tunnel-{kvm.name} -f {key}"])
        files.get(name=f"tunnel {kvm.name}'s public key, for its KVM host", src=f"{key}.pub",
                  dest=os.path.join(d.keys_dir, f"{kvm.name}.pub"))
        unit = files.template(name=f"a jump-host port reaches {kvm.name}'s sshd",
                              src=f"{T}/tunnel.service.j2",
                              dest=f"/etc/systemd/system/tunnel-{kvm.name}.service", mode="644",
                              tunnel=kvm.name, port=kvm.data.tunnel_port,
                              address=kvm.data.bridge_address.split("/")[0], key=key, key_dir=kdir)
        systemd.service(name=f"tunnel {kvm.name} runs", service=f"tunnel-{kvm.name}",
                        running=True, restarted=True, enabled=True, daemon_reload=True,
                        _if=unit.did_change)
        systemd.service(name=f"tunnel {kvm.name} runs", service=f"tunnel-{kvm.name}",
                        running=True, enabled=True, _if=unit.did_not_change)

# pyinfra orders the operations of each host, not across hosts: an operation every host shares
# (skipped everywhere) makes the jump host's ones come before the KVM hosts'.
server.shell(name="the jump host's part is done", commands=[":"], _if=lambda: False)

if "kvm_hosts" in host.groups:
    address = d.bridge_address.split("/")[0]

    def authorize_tunnel():
        # The jump host's key for this host's tunnel was fetched by an earlier operation.
        with open(os.path.join(d.keys_dir, f"{host.name}.pub")) as f:
            pub = f.read().strip()
        server.user_authorized_keys(
            name="the jump host's tunnel may forward to this host's sshd, and do nothing else",
            user="root",
            public_keys=[f'restrict,port-forwarding,permitopen="{address}:22" {pub}'])

    python.call(name="authorize the jump host's tunnel", function=authorize_tunnel)

    plan = files.template(name="br0 over the NIC carries the host's address, default route via the jump host",
                          src=f"{T}/netplan.yaml.j2", dest="/etc/netplan/10-lab.yaml", mode="600",
                          bridge_nic=d.bridge_nic, bridge_address=d.bridge_address,
                          jumphost_vm_address=d.jumphost_vm_address)
    # `netplan apply` needs udev, which containers lack: generate and let networkd reload
    server.shell(name="apply netplan", _if=plan.did_change,
                 commands=[f"netplan generate && networkctl reload && networkctl reconfigure {d.bridge_nic}"])

    for key in ("http_proxy", "https_proxy", "no_proxy"):
        value = d.no_proxy if key == "no_proxy" else d.proxy_url
        for k in (key, key.upper()):
            files.line(name=f"{k} in /etc/environment", path="/etc/environment",
                       line=f"^{k}=.*", replace=f'{k}="{value}"')
    files.put(name="apt through the jump host's squid", dest="/etc/apt/apt.conf.d/95proxy", mode="644",
              src=io.StringIO(f'Acquire::http::Proxy "{d.proxy_url}";\n'
                                            f'Acquire::https::Proxy "{d.proxy_url}";\n'))

    for t in ("ip6tables", "iptables", "arptables"):
        server.sysctl(name=f"bridged guest traffic bypasses {t}", key=f"net.bridge.bridge-nf-call-{t}",
                      value=0, persist=True, persist_file="/etc/sysctl.d/bridge.conf")
    files.put(name="and again whenever br_netfilter loads", dest="/etc/udev/rules.d/99-bridge.rules",
              mode="644", src=io.StringIO(
                  'ACTION=="add", SUBSYSTEM=="module", KERNEL=="br_netfilter", '
                  'RUN+="/sbin/sysctl -p /etc/sysctl.d/bridge.conf"\n'))
    files.put(name="IOMMU kernel arguments", dest="/etc/default/grub.d/98-kvm.cfg", mode="644",
              src=io.StringIO('GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX intel_iommu=on iommu=pt"\n'))

    apt.packages(name="libvirt is installed", packages=["libvirt-daemon-system", "libvirt-clients"])
    systemd.service(name="libvirtd runs now and at boot", service="libvirtd", running=True, enabled=True)

    # libvirt: no operation in pyinfra; the definitions are templated, virsh does the rest.
    for kind, name, tmpl in (("net", d.libvirt_network_name, "network.xml.j2"),
                             ("pool", d.pool_name, "pool.xml.j2")):
        xml = files.template(name=f"libvirt {kind} {name} definition", src=f"{T}/{tmpl}",
                             dest=f"/etc/libvirt/bench/{kind}-{name}.xml", mode="600",
                             libvirt_network_name=d.libvirt_network_name, pool_name=d.pool_name,
                             pool_path=d.pool_path)
        state = host.get_fact(Command, f"virsh -q {kind}-info {name} 2>/dev/null | "
                                       "awk -F': *' '/^(Active|State|Autostart)/ {print $1\"=\"$2}' || true")
        state = dict(l.split("=", 1) for l in (state or "").splitlines() if "=" in l)
        if not state:
            server.shell(name=f"define the libvirt {kind} {name}",
                         commands=[f"virsh {kind}-define /etc/libvirt/bench/{kind}-{name}.xml"])
        else:
            server.shell(name=f"redefine the libvirt {kind} {name}", _if=xml.did_change,
                         commands=[f"virsh {kind}-define /etc/libvirt/bench/{kind}-{name}.xml"])
        if state.get("Active", state.get("State")) not in ("yes", "running"):
            server.shell(name=f"start the libvirt {kind} {name}", commands=[f"virsh {kind}-start {name}"])
        if state.get("Autostart") != "yes":
            server.shell(name=f"the libvirt {kind} {name} starts at boot",
                         commands=[f"virsh {kind}-autostart {name}"])
