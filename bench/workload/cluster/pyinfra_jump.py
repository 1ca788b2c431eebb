# The jumphost-cluster job for pyinfra, part 1 of 2: the jump host (pyinfra_kvm.py follows, in
# the same `pyinfra` run, so the tunnel keys exist before the KVM hosts authorize them).
# pyinfra's operations (files.template, systemd.service, apt.packages) and server.shell where it
# has none (ssh-keygen). Same end state as playbooks/jumphost-cluster.yaml's jump-host play.
import os

from pyinfra import host, inventory
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd

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
    systemd.service(name="dhcpd runs", service="isc-dhcp-server", running=True, enabled=True)
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

