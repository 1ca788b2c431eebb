"""The jumphost-cluster workload: playbooks/jumphost-cluster.yaml (one jump host with squid,
dhcpd and one SSH tunnel per KVM host; N KVM hosts reached only through it, each with br0 over
its NIC, a libvirt network bridged onto it, a dir pool, bridge sysctls, proxy settings and grub
arguments) with kvmforge, Ansible and pyinfra, plus the floor: one plain ssh per host reading
the same files and running the same read-only commands.

Every tool gets a fresh lab (same image) for its first run; then a no-op run, then a drift run
after one KVM host drifted (a proxy line removed, the libvirt network stopped). Every run is
checked on the hosts. Used by bench.py (--workload cluster).
"""

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from bench import LAB, REPO, HERE, measure, med, save

W = HERE / "workload" / "cluster"
PLAYBOOK = REPO / "playbooks" / "jumphost-cluster.yaml"
MODES = ("first", "noop", "drift")
# The lab image for this workload: the base image plus the Python libraries Ansible needs on
# the managed hosts (python3-apt for its apt module, python3-libvirt and python3-lxml for
# community.libvirt). Its own cache, so the test suite's image is left alone.
LAB_ENV = {
    "KVMFORGE_LAB_CACHE": os.environ.get("KVMFORGE_BENCH_LAB_CACHE", "/var/tmp/kvmforge-bench/lab"),
    "KVMFORGE_LAB_EXTRA_PACKAGES": "python3-apt python3-libvirt python3-lxml",
}
NET = "host-bridge"
POOL, POOL_PATH = "images", "/var/lib/libvirt/images"
DRIFT = f"sed -i '/^http_proxy=/d' /etc/environment; virsh -q -c qemu:///system net-destroy {NET}"


class ClusterLab:
    """A jump host and N KVM hosts only on the VM network; torn down with down()."""

    def __init__(self, n, tag):
        self.name = f"benchc-{n}-{tag}"[:40]
        env = dict(os.environ, **LAB_ENV)
        subprocess.run(["bash", str(LAB), "down", self.name], capture_output=True, env=env)
        out = subprocess.run(["bash", str(LAB), "up", self.name, "--hosts", "0", "--jump", str(n)],
                             check=True, capture_output=True, text=True, env=env).stdout
        self.dir = Path(out.strip().splitlines()[-1])
        labenv = dict(l.split("=", 1) for l in (self.dir / "lab.env").read_text().splitlines() if "=" in l)
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.ssh_config = self.dir / "ssh_config"
        hosts = [l.split() for l in (self.dir / "hosts.txt").read_text().splitlines() if l.strip()]
        self.jump = next(a for h, a in hosts if h == "jump")
        self.kvm = [(h, a) for h, a in hosts if h.startswith("v")]
        self.vnet = labenv["LAB_VM_NET"].split("/")[0].rsplit(".", 1)[0]  # "10.213.3"
        self.jump_vm = labenv["LAB_JUMP_VM_ADDR"]
        self.n = n

    def down(self):
        subprocess.run(["bash", str(LAB), "down", self.name], capture_output=True, env=dict(os.environ, **LAB_ENV))

    def cpu(self):
        """CPU seconds used so far by every host of the lab (its cgroup), or None."""
        for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            try:
                with open(f"{root}/kvmforge-lab/{self.name}/cpu.stat") as f:
                    return int(next(l.split()[1] for l in f if l.startswith("usage_usec"))) / 1e6
            except (OSError, StopIteration):
                continue
        return None

    def measured(self, fn):
        """fn()'s result with `remote_cpu`: CPU seconds the hosts spent meanwhile."""
        before = self.cpu()
        r = fn()
        after = self.cpu()
        r["remote_cpu"] = after - before if before is not None and after is not None else None
        return r

    def common_vars(self):
        v = self.vnet
        return {
            "vm_network": f"{v}.0/24", "vm_subnet": f"{v}.0", "vm_netmask": "255.255.255.0",
            "jumphost_vm_address": self.jump_vm, "proxy_port": 3128,
            "proxy_url": f"http://{self.jump_vm}:3128",
            "no_proxy": f"localhost,127.0.0.1,{v}.0/24",
            "dhcp_range": [f"{v}.{min(11 + self.n, 250)}", f"{v}.254"],
            "jumphost_vm_nic": "eth1",
            "libvirt_network_name": NET, "pool_name": POOL, "pool_path": POOL_PATH,
        }

    def host_vars(self, i, addr):
        return {"bridge_nic": "eth0", "bridge_address": f"{addr}/24", "tunnel_port": 12000 + 10 + i}

    def write_ssh_config(self, path, kex, extra=""):
        lines = ["Host *", "  User root", f"  IdentityFile {self.key}", "  IdentitiesOnly yes",
                 f"  UserKnownHostsFile {path.parent / 'known_hosts'}", "  StrictHostKeyChecking yes",
                 "  BatchMode yes", "  LogLevel ERROR", "  ConnectTimeout 20"]
        if kex:
            lines.append(f"  KexAlgorithms {kex}")
        shutil.copy(self.known_hosts, path.parent / "known_hosts")
        path.write_text(extra + "\n".join(lines) + "\n")

    def fanout(self, cmds):
        """{name: cmd} run over the lab's ssh_config (ProxyJump for the KVM hosts) in parallel."""
        def one(name, cmd):
            return subprocess.run(["ssh", "-F", str(self.ssh_config), "-o", "ControlMaster=no",
                                   "-o", "ControlPath=none", name, cmd], capture_output=True, text=True)
        with ThreadPoolExecutor(max_workers=max(1, len(cmds))) as pool:
            futs = {name: pool.submit(one, name, cmd) for name, cmd in cmds.items()}
        return {name: f.result() for name, f in futs.items()}


# -- correctness ------------------------------------------------------------------------------

JUMP_CHECK = (
    "echo '== squid'; grep -E '^(http_port|acl localnet src)' /etc/squid/squid.conf; systemctl is-active squid;"
    "echo '== dhcpd'; grep -E '^ *(subnet|range) ' /etc/dhcp/dhcpd.conf; grep -E '^INTERFACESv4=' /etc/default/isc-dhcp-server;"
    " systemctl is-active isc-dhcp-server;"
    "echo '== tunnels'; ss -Hltnp | grep -o ':120[0-9][0-9] .*ssh' | cut -d' ' -f1 | sort -u"
)
KVM_CHECK = (
    "echo '== br0'; ip -j addr show br0; echo; echo '== nic'; ip -j link show eth0; echo;"
    f"echo '== net'; virsh -q -c qemu:///system net-info {NET} | grep -E '^(Active|Autostart)';"
    f" virsh -c qemu:///system net-dumpxml {NET} | grep -E \"<(forward|bridge) \";"
    f"echo '== pool'; virsh -q -c qemu:///system pool-info {POOL} | grep -E '^(State|Autostart)';"
    f" virsh -c qemu:///system pool-dumpxml {POOL} | grep '<path>';"
    "echo '== sysctl'; cat /etc/sysctl.d/bridge.conf; cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null;"
    "echo '== env'; cat /etc/environment;"
    "echo '== grub'; cat /etc/default/grub.d/*.cfg;"
    "echo '== keys'; cat /root/.ssh/authorized_keys;"
    "echo '== libvirtd'; systemctl is-active libvirtd"
)


def sections(text):
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith("== "):
            cur = line[3:].strip()
            out[cur] = []
        elif cur:
            out[cur].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def verify(lab, tries=20):
    """The cluster is what the workload describes, on every host. Tunnels and br0 settle
    asynchronously (systemd restarts a tunnel every 5 s until its key is authorized; networkd
    applies br0 in the background), so a failed check is retried for up to `tries` seconds."""
    cv = lab.common_vars()
    for attempt in range(tries):
        errors = []
        cmds = {"jump": JUMP_CHECK, **{h: KVM_CHECK for h, _ in lab.kvm}}
        res = lab.fanout(cmds)
        s = sections(res["jump"].stdout)
        sq = s.get("squid", "")
        if f"http_port {lab.jump_vm}:3128" not in sq or f"acl localnet src {cv['vm_network']}" not in sq \
                or not sq.endswith("active"):
            errors.append(f"jump: squid: {sq!r}")
        dh = s.get("dhcpd", "")
        if f"subnet {cv['vm_subnet']} netmask 255.255.255.0" not in dh or \
                f"range {cv['dhcp_range'][0]} {cv['dhcp_range'][1]};" not in dh or \
                'INTERFACESv4="eth1"' not in dh or not dh.endswith("active"):
            errors.append(f"jump: dhcpd: {dh!r}")
        ports = set(s.get("tunnels", "").split())
        want = {f":{lab.host_vars(i, a)['tunnel_port']}" for i, (_, a) in enumerate(lab.kvm, 1)}
        if want - ports:
            errors.append(f"jump: tunnels not listening: {sorted(want - ports)}")
        for i, (h, a) in enumerate(lab.kvm, 1):
            s = sections(res[h].stdout)
            try:
                br = json.loads(s.get("br0") or "[]")
                addrs = {f"{x['local']}/{x['prefixlen']}" for d in br for x in d.get("addr_info", [])}
                nic = json.loads(s.get("nic") or "[]")
            except json.JSONDecodeError:
                addrs, nic = set(), []
            if f"{a}/24" not in addrs:
                errors.append(f"{h}: br0 without {a}/24: {addrs}")
            if not nic or nic[0].get("master") != "br0":
                errors.append(f"{h}: eth0 not in br0")
            net = s.get("net", "")
            yes = lambda text, k, v: any(l.split(":")[0] == k and l.split()[-1] == v for l in text.splitlines())
            if not (yes(net, "Active", "yes") and yes(net, "Autostart", "yes")) \
                    or "<bridge name='br0'" not in net or "<forward mode='bridge'" not in net:
                errors.append(f"{h}: libvirt network: {net!r}")
            pool = s.get("pool", "")
            if not (yes(pool, "State", "running") and yes(pool, "Autostart", "yes")) \
                    or f"<path>{POOL_PATH}</path>" not in pool:
                errors.append(f"{h}: pool: {pool!r}")
            sy = s.get("sysctl", "")
            for t in ("ip6tables", "iptables", "arptables"):
                if not any(l.replace(" ", "") == f"net.bridge.bridge-nf-call-{t}=0" for l in sy.splitlines()):
                    errors.append(f"{h}: sysctl file without bridge-nf-call-{t} = 0")
            if sy.splitlines() and sy.splitlines()[-1].strip() == "1":
                errors.append(f"{h}: live bridge-nf-call-iptables is 1")
            env = s.get("env", "")
            for k, v in (("http_proxy", cv["proxy_url"]), ("https_proxy", cv["proxy_url"]),
                         ("no_proxy", cv["no_proxy"])):
                if f'{k}="{v}"' not in env.splitlines():
                    errors.append(f"{h}: /etc/environment without {k}")
            if "intel_iommu=on iommu=pt" not in s.get("grub", ""):
                errors.append(f"{h}: no grub arguments")
            if f'permitopen="{a}:22"' not in s.get("keys", ""):
                errors.append(f"{h}: tunnel key not authorized")
            if s.get("libvirtd", "").strip() != "active":
                errors.append(f"{h}: libvirtd not active")
        if not errors:
            return attempt
        time.sleep(1)
    raise RuntimeError("cluster check failed:\n  " + "\n  ".join(errors[:20]))


# -- the floor -----------------------------------------------------------------------------

FLOOR_JUMP = ("cat /etc/squid/squid.conf /etc/dhcp/dhcpd.conf /etc/default/isc-dhcp-server "
              "/etc/systemd/system/*tunnel*.service; systemctl is-active squid isc-dhcp-server")
FLOOR_KVM = ("cat /etc/netplan/*.yaml /etc/environment /etc/sysctl.d/bridge.conf /etc/udev/rules.d/99-bridge.rules "
             "/etc/default/grub.d/*.cfg /root/.ssh/authorized_keys; ip -j addr; ip -j link; "
             f"virsh -c qemu:///system net-dumpxml {NET}; virsh -c qemu:///system pool-dumpxml {POOL}; "
             "systemctl is-active libvirtd")


def floor(lab, work, kex):
    """One plain ssh per host (through the jump host for the KVM hosts, as every tool goes),
    reading the workload's files and running its read-only commands, all at once."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "ssh_config"
    lab.write_ssh_config(cfg, kex, extra="Host *\n  ControlMaster no\n  ControlPath none\n")
    lines = ["#!/bin/sh", f"ssh -F {cfg} root@{lab.jump} '{FLOOR_JUMP}' >/dev/null 2>&1 &"]
    for _, a in lab.kvm:
        lines.append(f"ssh -F {cfg} -J root@{lab.jump} root@{a} '{FLOOR_KVM}' >/dev/null 2>&1 &")
    lines.append("wait")
    (work / "floor.sh").write_text("\n".join(lines) + "\n")
    return measure(["sh", str(work / "floor.sh")])


# -- the tools ----------------------------------------------------------------------------------

def failed(tool, r, what):
    """Keep the whole output of a failed run next to the tool's files; raise with its tail."""
    log = tool.work / "failed-run.log"
    log.write_text(r["out"])
    raise RuntimeError(f"{tool.name} {what} (whole output: {log}):\n{r['out'][-4000:]}")


class Kvmforge:
    name = "kvmforge"

    def __init__(self, binary, kex):
        self.binary, self.kex = binary, kex

    def setup(self, lab, work):
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        plays = yaml.safe_load(PLAYBOOK.read_text())
        extra = yaml.safe_load((W / "kvmforge-extra.yaml").read_text())
        next(p for p in plays if p["hosts"] == "kvm_hosts")["tasks"].extend(extra)
        self.playbook = self.work / "jumphost-cluster.yaml"
        self.playbook.write_text(yaml.safe_dump(plays, sort_keys=False, width=1000))
        cfg = self.work / "ssh_config"
        lab.write_ssh_config(cfg, self.kex)
        cv = lab.common_vars()
        inv = {"all": {
            "vars": {k: cv[k] for k in ("vm_network", "jumphost_vm_address", "dhcp_range", "jumphost_vm_nic",
                                        "pool_name", "pool_path")}
            | {"user": "root", "key": str(lab.key), "known_hosts": str(self.work / "known_hosts"),
               "ssh_config": str(cfg)},
            "children": {
                "jumphost": {"hosts": {"jump": {"host": lab.jump}}},
                "kvm_hosts": {"vars": {"jump": f"root@{lab.jump}"},
                              "hosts": {h: {"host": a, **lab.host_vars(i, a)} for i, (h, a) in enumerate(lab.kvm, 1)}},
            }}}
        (self.work / "inventory.yaml").write_text(json.dumps(inv, indent=1))
        self.n = lab.n + 1

    def run(self):
        r = measure([self.binary, "run", str(self.playbook), "-i", str(self.work / "inventory.yaml"),
                     "-f", str(self.n), "--detailed-exitcode", "--output", "json"])
        if r["rc"] not in (0, 8):
            failed(self, r, f"failed (exit {r['rc']})")
        r["changed"] = r["rc"] == 8
        return r


class Ansible:
    """ansible-playbook with forks > hosts, pipelining, ControlPersist, no fact gathering."""
    name = "ansible"

    def __init__(self, venv, kex):
        self.venv, self.kex = venv, kex

    def setup(self, lab, work):
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        cfg = self.work / "ssh_config"
        lab.write_ssh_config(cfg, self.kex)
        self.cp = Path(f"/tmp/kvmforge-bench-ccp-{lab.n}")
        (self.work / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {lab.n + 1}\n"
            "gathering = explicit\n"
            "strategy = free\n"
            "interpreter_python = /usr/bin/python3\n"
            "retry_files_enabled = False\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"control_path_dir = {self.cp}\n"
            f"ssh_args = -F {cfg} -o ControlMaster=auto -o ControlPersist=60s\n")
        cv = lab.common_vars()
        inv = {"all": {
            "vars": cv | {"ansible_user": "root"},
            "children": {
                "jumphost": {"hosts": {"jump": {"ansible_host": lab.jump}}},
                "kvm_hosts": {
                    "vars": {"ansible_ssh_common_args":
                             f"-o ProxyCommand=\"ssh -F {cfg} -W %h:%p root@{lab.jump}\""},
                    "hosts": {h: {"ansible_host": a, **lab.host_vars(i, a)} for i, (h, a) in enumerate(lab.kvm, 1)}},
            }}}
        (self.work / "inventory.yaml").write_text(json.dumps(inv, indent=1))
        # the playbook's templates are found next to it
        shutil.copy(W / "ansible.yaml", self.work / "cluster.yaml")
        shutil.rmtree(self.work / "templates", ignore_errors=True)
        shutil.copytree(W / "templates", self.work / "templates")

    def _stop_masters(self):
        for sock in self.cp.glob("*") if self.cp.exists() else []:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True)
        shutil.rmtree(self.cp, ignore_errors=True)

    def run(self):
        self._stop_masters()  # every run starts cold, like a scheduled drift check
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.work / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        r = measure([str(self.venv / "bin" / "ansible-playbook"), "-i", str(self.work / "inventory.yaml"),
                     str(self.work / "cluster.yaml")], env=env, cwd=self.work)
        import re
        recap = re.findall(r"changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", r["out"])
        if r["rc"] != 0 or not recap or any(int(u) or int(f) for _, u, f in recap):
            failed(self, r, f"failed (exit {r['rc']})")
        r["changed"] = any(int(c) for c, _, _ in recap)
        self._stop_masters()
        return r


class Pyinfra:
    name = "pyinfra"

    def __init__(self, venv):
        self.venv = venv

    def setup(self, lab, work):
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        cfg = self.work / "ssh_config"
        # paramiko: the documented way through a jump host is ProxyJump in an ssh_config file
        lab.write_ssh_config(cfg, None, extra=f"Host {lab.vnet}.*\n  ProxyJump root@{lab.jump}\n\n")
        keys = self.work / "keys"
        shutil.rmtree(keys, ignore_errors=True)
        keys.mkdir()
        cv = lab.common_vars()
        base = cv | {"ssh_user": "root", "ssh_key": str(lab.key), "ssh_config_file": str(cfg),
                     "ssh_known_hosts_file": str(self.work / "known_hosts"),
                     "ssh_strict_host_key_checking": "yes", "ssh_allow_agent": False,
                     "ssh_look_for_keys": False, "keys_dir": str(keys)}
        jump = [("jump", base | {"ssh_hostname": lab.jump})]
        kvm = [(h, base | {"ssh_hostname": a} | lab.host_vars(i, a)) for i, (h, a) in enumerate(lab.kvm, 1)]
        (self.work / "inventory.py").write_text(f"jumphost = {jump!r}\nkvm_hosts = {kvm!r}\n")
        self.n = lab.n + 1

    def run(self):
        import re
        r = measure([str(self.venv / "bin" / "pyinfra"), "-y", "--parallel", str(self.n),
                     str(self.work / "inventory.py"), str(W / "pyinfra_deploy.py")],
                    cwd=self.work)
        if r["rc"] != 0:
            failed(self, r, f"failed (exit {r['rc']})")
        m = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", r["out"])
        count = lambda s: 0 if s == "-" else int(s)
        if not m or count(m.group(3)):
            failed(self, r, "reported errors")
        # python.call always counts as a success; the operation it runs is counted on its own
        wrapper = re.search(r"authorize the jump host's tunnel\s+(\d+)\s+(\S+)", r["out"])
        r["changed"] = count(m.group(2)) - (count(wrapper.group(2)) if wrapper else 0) > 0
        return r


def tools(args, venv, kex):
    ts = [Kvmforge(args.kvmforge, kex), Pyinfra(venv), Ansible(venv, kex)]
    if args.tools:
        ts = [t for t in ts if t.name in args.tools.split(",")]
    return ts


def bench_n(args, n, venv, kex, work, log=print):
    """Every tool on fresh hosts; returns {tool: {mode: [run]}, 'floor': {'noop': [...]}}."""
    runs = {"floor": {"noop": []}}
    for t in tools(args, venv, kex):
        reps = args.slow_reps if t.name == "ansible" else args.reps
        runs[t.name] = {m: [] for m in MODES}
        for rep in range(reps):
            log(f"== {n} KVM hosts: {t.name} rep {rep + 1}: booting a fresh lab")
            lab = ClusterLab(n, t.name)
            try:
                t.setup(lab, work / f"c{n}")
                first = lab.measured(t.run)
                if not first["changed"]:
                    raise RuntimeError(f"{t.name}: first run reported no change")
                settle = verify(lab)
                noop = lab.measured(t.run)
                if noop["changed"] and t.name == "kvmforge":
                    raise RuntimeError(f"{t.name}: no-op run reported changes:\n{noop['out'][-3000:]}")
                if noop["changed"]:
                    # A peer's false change is its own behaviour (e.g. starting a libvirtd that
                    # exited after its idle timeout while a long first run went on): recorded, and
                    # stated in the results, not an error of the benchmark.
                    log(f"   {t.name:9} rep {rep + 1}: the no-op run reported changes")
                    (work / f"c{n}" / f"{t.name}-noop-changed.log").write_text(noop["out"])
                noop["reported_changes"] = noop["changed"]
                lab.fanout({lab.kvm[0][0]: DRIFT})
                drift = lab.measured(t.run)
                if not drift["changed"]:
                    raise RuntimeError(f"{t.name}: drift run reported no change")
                verify(lab)
                for m, r in zip(MODES, (first, noop, drift)):
                    r.pop("out", None)
                    runs[t.name][m].append(r)
                log(f"   {t.name:9} rep {rep + 1}: first {first['wall']:7.2f}s  noop {noop['wall']:7.2f}s"
                    f"  drift {drift['wall']:7.2f}s  (settled after {settle}s)")
                # the floor on the same converged hosts, alternated with no-op runs of the tool
                if t.name == "kvmforge":
                    for pair in range(args.noop_pairs):
                        order = ("floor", t) if pair % 2 == 0 else (t, "floor")
                        for who in order:
                            if who == "floor":
                                r = lab.measured(lambda: floor(lab, work / f"c{n}" / "floor", kex))
                                runs["floor"]["noop"].append(r)
                            else:
                                r = lab.measured(t.run)
                                if r["changed"]:
                                    raise RuntimeError("kvmforge: no-op run reported changes")
                                runs[t.name]["noop"].append(r)
                            r.pop("out", None)
                        log(f"   kvmforge  pair {pair + 1}: noop {runs[t.name]['noop'][-1]['wall']:.2f}s"
                            f"  floor {runs['floor']['noop'][-1]['wall']:.2f}s")
                elif not runs["floor"]["noop"]:
                    r = lab.measured(lambda: floor(lab, work / f"c{n}" / "floor", kex))
                    r.pop("out", None)
                    runs["floor"]["noop"].append(r)
            finally:
                if not args.keep:
                    lab.down()
    return runs


# -- driver, report ---------------------------------------------------------------------------

NAMES = {"kvmforge": "kvmforge", "pyinfra": "pyinfra", "ansible": "Ansible", "floor": "ssh floor"}


def bench(args):
    from bench import machine, versions
    venv = Path(args.venv)
    kex = None if args.kex == "default" else args.kex
    results = {"workload": "cluster", "machine": machine(), "versions": versions(venv, args.kvmforge),
               "reps": args.reps, "slow_reps": args.slow_reps, "noop_pairs": args.noop_pairs,
               "kex": args.kex, "runs": {}, "load": {}}
    out = Path(args.out)
    for n in [int(x) for x in args.hosts.split(",")]:
        before = os.getloadavg()
        results["runs"][str(n)] = bench_n(args, n, venv, kex, Path(args.work), log=lambda m: print(m, flush=True))
        results["load"][str(n)] = {"before": before, "after": os.getloadavg()}
        save(results, out, markdown, plot)
    return results


def markdown(results):
    m = results["machine"]
    v = results["versions"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}. "
        f"Tools: {v['kvmforge']}, {v['pyinfra']}, {v['ansible']}, {v['ssh']}.",
        f"Workload: playbooks/jumphost-cluster.yaml, one jump host + N KVM hosts behind it. Wall time in "
        f"seconds, median of {results['reps']} runs (Ansible: {results['slow_reps']}; kvmforge's no-op and "
        f"the floor: + {results['noop_pairs']} runs alternated back to back), each tool on a fresh lab; "
        f"ratio = time / kvmforge's. SSH key exchange: {results['kex']} for every OpenSSH-based run.",
        "",
        "| KVM hosts | run | kvmforge | pyinfra | Ansible | ssh floor |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n, runs in results["runs"].items():
        for mode in MODES:
            base = med(runs.get("kvmforge", {}).get(mode, []))
            cells = []
            for tool in ("kvmforge", "pyinfra", "ansible", "floor"):
                t = med(runs.get(tool, {}).get(mode, []))
                if t is None:
                    cells.append("—")
                elif tool == "kvmforge" or not base:
                    cells.append(f"{t:.2f}")
                else:
                    cells.append(f"{t:.2f} ({t / base:.2g}×)")
            lines.append(f"| {n} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Controller CPU seconds (the tool and its ssh processes) and peak memory (largest process), "
              "first run / no-op run:", "",
              "| KVM hosts | kvmforge | pyinfra | Ansible | ssh floor |", "|---:|---:|---:|---:|---:|"]
    for n, runs in results["runs"].items():
        cells = []
        for tool in ("kvmforge", "pyinfra", "ansible", "floor"):
            f, o = runs.get(tool, {}).get("first", []), runs.get(tool, {}).get("noop", [])
            if not o:
                cells.append("—")
            elif not f:
                cells.append(f"{med(o, 'cpu'):.2f} s, {max(r['rss_mb'] for r in o):.0f} MB")
            else:
                cells.append(f"{med(f, 'cpu'):.2f} / {med(o, 'cpu'):.2f} s, "
                             f"{max(r['rss_mb'] for r in f + o):.0f} MB")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    rc = lambda rs: [r["remote_cpu"] for r in rs if r.get("remote_cpu") is not None]
    if any(rc(runs.get(t, {}).get("noop", [])) for runs in results["runs"].values() for t in NAMES):
        lines += ["", "CPU seconds used by the hosts themselves (all of them, from the lab's cgroup) "
                  "during the run, first / no-op:", "",
                  "| KVM hosts | kvmforge | pyinfra | Ansible | ssh floor |", "|---:|---:|---:|---:|---:|"]
        for n, runs in results["runs"].items():
            cells = []
            for tool in ("kvmforge", "pyinfra", "ansible", "floor"):
                f, o = rc(runs.get(tool, {}).get("first", [])), rc(runs.get(tool, {}).get("noop", []))
                import statistics
                cells.append(("—" if not o else (f"{statistics.median(f):.1f} / " if f else "") +
                              f"{statistics.median(o):.2f} s"))
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    false = [f"{NAMES[t]} at {n} KVM hosts ({sum(1 for r in runs[t]['noop'] if r.get('reported_changes'))} of "
             f"{len(runs[t]['noop'])})" for n, runs in results["runs"].items() for t in ("pyinfra", "ansible")
             if any(r.get("reported_changes") for r in runs.get(t, {}).get("noop", []))]
    if false:
        lines += ["", "No-op runs that reported changes on hosts already in their configured state: "
                  + "; ".join(false) + "."]
    if results.get("load"):
        lines += ["", "Load average (1 min) when each size started / ended: " + "; ".join(
            f"{n}: {l['before'][0]:.1f} / {l['after'][0]:.1f}" for n, l in results["load"].items()) + "."]
    lines += ["", "Targets:", ""]
    for n, runs in results["runs"].items():
        if "kvmforge" not in runs or not runs["kvmforge"]["noop"]:
            continue
        k = {mode: med(runs["kvmforge"][mode]) for mode in MODES}
        checks = []
        if runs.get("ansible", {}).get("noop"):
            a = {mode: med(runs["ansible"][mode]) for mode in MODES}
            checks.append(f"no-op {a['noop'] / k['noop']:.0f}× faster than Ansible (target ≥ 40×)")
            checks.append(f"first run {a['first'] / k['first']:.0f}× faster than Ansible (target ≥ 10×)")
        if runs.get("pyinfra", {}).get("noop"):
            p = {mode: med(runs["pyinfra"][mode]) for mode in MODES}
            checks.append(f"no-op {p['noop'] / k['noop']:.1f}× faster than pyinfra (target ≥ 3×)")
            checks.append(f"first run {p['first'] / k['first']:.1f}× faster than pyinfra (target ≥ 2×)")
        if runs.get("floor", {}).get("noop"):
            checks.append(f"no-op {k['noop'] / med(runs['floor']['noop']):.2f}× the ssh floor (target ≤ 1.2×)")
        lines.append(f"- {n} KVM hosts: " + "; ".join(checks))
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in results["runs"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, mode in zip(axes, MODES):
        for tool in ("kvmforge", "pyinfra", "ansible", "floor"):
            pts = [(n, med(results["runs"][str(n)].get(tool, {}).get(mode, []))) for n in ns]
            pts = [(n, t) for n, t in pts if t is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=NAMES[tool])
        ax.set_title({"first": "first run (fresh hosts)", "noop": "no-op re-run",
                      "drift": "re-run after one host drifted"}[mode])
        ax.set_xlabel("KVM hosts (+ the jump host)")
        ax.set_ylabel("seconds (log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    axes[0].legend(handles.values(), handles.keys())
    fig.suptitle("jumphost-cluster workload")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
