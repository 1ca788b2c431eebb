#!/usr/bin/env python3
"""Benchmark: the same KVM-host workload with kvmforge, Ansible and pyinfra on the same test
hosts in one run, plus the floor (one plain `ssh host cat ...` per host, all in parallel).

For each number of hosts it boots that many Debian hosts with tests/lab/lab.sh, then, for every
tool and repetition: resets the hosts, runs the workload on fresh hosts ("first"), runs it again
("noop", the drift check), changes one file on every host and runs it once more ("drift").
Every run is checked: the first must change and leave exactly the expected files, the no-op run
must change nothing, the drift run must repair the file. Wall time is the median over the
repetitions; controller CPU and peak memory come from wait4() on the tool's process tree.

With --workload cluster the job is playbooks/jumphost-cluster.yaml instead, a jump host and N
KVM hosts behind it (see cluster.py).

Writes bench/results/WORKLOAD[-kex-default][-TAG]/{results.json,results.md,plot.png}. Run it
through bench/run.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LAB = REPO / "tests" / "lab" / "lab.sh"
sys.path.insert(0, str(HERE / "workload"))
from files import DRIFT_FILE, ENV_LINES, FILES, POOL_DIR  # noqa: E402

MODES = ("first", "noop", "drift")


class Lab:
    """Test hosts booted by lab.sh; torn down on exit."""

    def __init__(self, n):
        self.name = f"bench-{n}"
        out = subprocess.run(
            ["bash", str(LAB), "up", self.name, "--hosts", str(n)],
            check=True, capture_output=True, text=True,
        ).stdout
        self.dir = Path(out.strip().splitlines()[-1])
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.hosts = [tuple(l.split()) for l in (self.dir / "hosts.txt").read_text().splitlines() if l.strip()]

    def down(self):
        subprocess.run(["bash", str(LAB), "down", self.name], capture_output=True)

    def ssh_argv(self, addr, cmd, kex=None):
        return [
            "ssh", "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
            *(["-o", f"KexAlgorithms={kex}"] if kex else []),
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR",
            f"root@{addr}", cmd,
        ]

    def fanout(self, cmd):
        """Run `cmd` on every host in parallel; returns {name: stdout}."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.hosts))) as pool:
            futs = {
                name: pool.submit(subprocess.run, self.ssh_argv(addr, cmd), capture_output=True, text=True)
                for name, addr in self.hosts
            }
        out = {}
        for name, f in futs.items():
            r = f.result()
            if r.returncode != 0:
                raise RuntimeError(f"{name}: `{cmd}` failed: {r.stderr.strip()}")
            out[name] = r.stdout
        return out


def measure(argv, env=None, cwd=None):
    """Run a command to completion: wall seconds, CPU seconds and peak RSS (MB).

    GNU time starts the tool: measuring it straight from this process would report this
    process's own memory, which a child inherits through fork until exec."""
    stats = Path(os.environ.get("TMPDIR", "/tmp")) / f"kvmforge-bench-time.{os.getpid()}"
    start = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", str(stats)] + argv,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    user, system, rss = stats.read_text().split()[-3:]
    stats.unlink()
    return {
        "wall": wall,
        "cpu": float(user) + float(system),
        "rss_mb": int(rss) / 1024,
        "rc": p.returncode,
        "out": p.stdout.decode(errors="replace"),
    }


def floor(lab, workdir, kex):
    """One plain ssh per host reading the workload's files, all at once."""
    cat = "cat " + " ".join(sorted(FILES)) + " /etc/environment; stat -c %a " + POOL_DIR
    script = workdir / "floor.sh"
    lines = ["#!/bin/sh"]
    for _, addr in lab.hosts:
        argv = " ".join(f"'{a}'" for a in lab.ssh_argv(addr, cat, kex))
        lines.append(f"{argv} >/dev/null 2>&1 &")
    lines.append("wait")
    script.write_text("\n".join(lines) + "\n")
    return measure(["sh", str(script)])


RESET = (
    "rm -rf " + " ".join(sorted(FILES)) + f" {POOL_DIR}; "
    "sed -i -e '/^http_proxy=/d' -e '/^https_proxy=/d' -e '/^no_proxy=/d' /etc/environment"
)
DRIFT = f"echo 'options kvm_intel nested=0' > {DRIFT_FILE}"


def verify(lab, exact):
    """The hosts hold what the workload describes. `exact`: paths whose content must match."""
    cmd = "; ".join(f"echo '== {p}'; cat {p}" for p in exact) + f"; echo '== env'; cat /etc/environment; echo '== pool'; stat -c %a {POOL_DIR}"
    want = "".join(f"== {p}\n{FILES[p]}" for p in exact)
    env = "".join(f'{k}="{v}"\n' for k, v in ENV_LINES)
    for name, out in lab.fanout(cmd).items():
        head, _, rest = out.partition("== env\n")
        envtext, _, pool = rest.partition("== pool\n")
        if head != want:
            raise RuntimeError(f"{name}: files differ from the workload:\n{head}")
        lines = [l for l in envtext.splitlines() if l.split("=")[0] in {k for k, _ in ENV_LINES}]
        if "".join(l + "\n" for l in lines) != env:
            raise RuntimeError(f"{name}: /etc/environment proxy lines wrong:\n{envtext}")
        if pool.strip() != "711":
            raise RuntimeError(f"{name}: pool directory mode {pool.strip()!r}")


class Kvmforge:
    slow = False

    def __init__(self, binary, kex, workload="kvmforge.yaml", name="kvmforge"):
        self.binary, self.kex, self.workload, self.name = binary, kex, workload, name
        # Files the KVM modules write differently (with headers) are not compared byte for byte.
        self.exact = sorted(FILES) if workload == "kvmforge.yaml" else [
            "/etc/modprobe.d/kvm.conf", "/etc/netplan/01-br0.yaml", "/etc/modules-load.d/kvm.conf"]

    def setup(self, lab, work):
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.copy(lab.known_hosts, self.work / "known_hosts")
        inv = ["all:", "  vars:", "    user: root", f"    key: {lab.key}",
               f"    known_hosts: {self.work / 'known_hosts'}"]
        if self.kex:
            (self.work / "ssh_config").write_text(f"Host *\n  KexAlgorithms {self.kex}\n")
            inv.append(f"    ssh_config: {self.work / 'ssh_config'}")
        inv.append("  hosts:")
        inv += [f"    {name}: {{host: {addr}}}" for name, addr in lab.hosts]
        (self.work / "inventory.yaml").write_text("\n".join(inv) + "\n")
        self.n = len(lab.hosts)

    def run(self):
        r = measure([self.binary, "run", str(HERE / "workload" / self.workload), "-i",
                     str(self.work / "inventory.yaml"), "-f", str(max(self.n, 1)),
                     "--detailed-exitcode", "--output", "json"])
        if r["rc"] not in (0, 8):
            raise RuntimeError(f"{self.name} failed (exit {r['rc']}):\n{r['out'][-3000:]}")
        r["changed"] = r["rc"] == 8
        recap = json.loads(r["out"].strip().splitlines()[-1])
        r["invocations"] = max(h["invocations"] for h in recap["hosts"].values())
        return r


class Ansible:
    """ansible-playbook at its fastest documented settings: forks >= hosts, pipelining,
    ControlPersist multiplexing, no fact gathering, the free strategy."""

    name = "ansible"
    slow = True

    def __init__(self, venv, kex):
        self.venv, self.kex = venv, kex
        self.exact = sorted(FILES)

    def setup(self, lab, work):
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.copy(lab.known_hosts, self.work / "known_hosts")
        kex = f" -o KexAlgorithms={self.kex}" if self.kex else ""
        self.cp = Path(f"/tmp/kvmforge-bench-cp-{len(lab.hosts)}")
        (self.work / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {max(5, len(lab.hosts))}\n"
            "host_key_checking = True\n"
            "gathering = explicit\n"
            "strategy = free\n"
            "interpreter_python = /usr/bin/python3\n"
            "retry_files_enabled = False\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"control_path_dir = {self.cp}\n"
            f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes "
            f"-o UserKnownHostsFile={self.work / 'known_hosts'} -o StrictHostKeyChecking=yes{kex}\n"
        )
        inv = ["[all]"] + [
            f"{name} ansible_host={addr} ansible_user=root ansible_ssh_private_key_file={lab.key}"
            for name, addr in lab.hosts
        ]
        (self.work / "inventory.ini").write_text("\n".join(inv) + "\n")

    def run(self):
        # Every run starts cold, like a scheduled drift check: no masters left from the last run.
        subprocess.run(["pkill", "-f", str(self.cp)], capture_output=True)
        shutil.rmtree(self.cp, ignore_errors=True)
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.work / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        r = measure([str(self.venv / "bin" / "ansible-playbook"), "-i", str(self.work / "inventory.ini"),
                     str(HERE / "workload" / "ansible.yaml")], env=env, cwd=self.work)
        recap = re.findall(r"changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", r["out"])
        if r["rc"] != 0 or not recap or any(int(u) or int(f) for _, u, f in recap):
            raise RuntimeError(f"ansible failed (exit {r['rc']}):\n{r['out'][-3000:]}")
        r["changed"] = any(int(c) for c, _, _ in recap)
        subprocess.run(["pkill", "-f", str(self.cp)], capture_output=True)
        return r


class Pyinfra:
    name = "pyinfra"
    slow = False

    def __init__(self, venv):
        self.venv = venv
        self.exact = sorted(FILES)

    def setup(self, lab, work):
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        shutil.copy(lab.known_hosts, self.work / "known_hosts")
        data = {"ssh_user": "root", "ssh_key": str(lab.key),
                "ssh_known_hosts_file": str(self.work / "known_hosts"),
                "ssh_strict_host_key_checking": "yes", "ssh_allow_agent": False,
                "ssh_look_for_keys": False}
        hosts = [(addr, dict(data)) for _, addr in lab.hosts]
        (self.work / "inventory.py").write_text(f"hosts = {hosts!r}\n")
        self.n = len(lab.hosts)

    def run(self):
        r = measure([str(self.venv / "bin" / "pyinfra"), "-y", "--parallel", str(max(self.n, 1)),
                     str(self.work / "inventory.py"), str(HERE / "workload" / "pyinfra_deploy.py")],
                    cwd=self.work)
        if r["rc"] != 0:
            raise RuntimeError(f"pyinfra failed (exit {r['rc']}):\n{r['out'][-3000:]}")
        # The results table's last line: "Grand total  HOSTS  SUCCESS  ERROR  NO-CHANGE", where
        # Success counts operations that changed something.
        m = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", r["out"])
        count = lambda s: 0 if s == "-" else int(s)
        if not m or count(m.group(3)):
            raise RuntimeError(f"pyinfra reported errors:\n{r['out'][-3000:]}")
        r["changed"] = count(m.group(2)) > 0
        return r


def machine():
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    try:
        mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) // 1024 // 1024
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gb": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def versions(venv, binary):
    def v(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {
        "kvmforge": v([binary, "--version"]),
        "ansible": v([str(venv / "bin" / "ansible-playbook"), "--version"]),
        "pyinfra": v([str(venv / "bin" / "pyinfra"), "--version"]),
        "ssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
    }


def bench(args):
    venv, binary = Path(args.venv), args.kvmforge
    kex = None if args.kex == "default" else args.kex
    tools = [Kvmforge(binary, kex), Kvmforge(binary, kex, "kvmforge-kvm.yaml", "kvmforge-kvm"), Pyinfra(venv),
             Ansible(venv, kex)]
    if args.tools:
        tools = [t for t in tools if t.name in args.tools.split(",")]
    results = {"machine": machine(), "versions": versions(venv, binary), "reps": args.reps, "kex": args.kex,
               "slow_reps": args.slow_reps, "noop_pairs": args.noop_pairs, "runs": {}, "load": {}}
    work = Path(args.work)
    for n in [int(x) for x in args.hosts.split(",")]:
        print(f"== {n} hosts: booting", flush=True)
        before = os.getloadavg()
        lab = Lab(n)
        try:
            wn = work / f"n{n}"
            for t in tools:
                t.setup(lab, wn)
            runs = {t.name: {m: [] for m in MODES} for t in tools}
            runs["floor"] = {"noop": []}
            for rep in range(args.reps):
                for t in tools:
                    if t.slow and rep >= args.slow_reps:
                        continue
                    lab.fanout(RESET)
                    first = t.run()
                    if not first["changed"]:
                        raise RuntimeError(f"{t.name}: first run reported no change:\n{first['out'][-2500:]}")
                    verify(lab, t.exact)
                    noop = t.run()
                    if noop["changed"]:
                        raise RuntimeError(f"{t.name}: no-op run reported changes:\n{noop['out'][-2000:]}")
                    lab.fanout(DRIFT)
                    drift = t.run()
                    if not drift["changed"]:
                        raise RuntimeError(f"{t.name}: drift run reported no change:\n{drift['out'][-2500:]}")
                    verify(lab, t.exact)
                    for m, r in zip(MODES, (first, noop, drift)):
                        r.pop("out", None)
                        runs[t.name][m].append(r)
                    print(f"   {t.name:13} rep {rep + 1}: first {first['wall']:7.2f}s  noop {noop['wall']:7.2f}s"
                          f"  drift {drift['wall']:7.2f}s", flush=True)
                f = floor(lab, wn, kex)
                f.pop("out", None)
                runs["floor"]["noop"].append(f)
                print(f"   {'ssh floor':13} rep {rep + 1}: {f['wall']:.2f}s", flush=True)
            # The no-op run against the floor, alternated back to back: on a machine this loaded
            # the floor itself moves by a quarter between minutes, so the two are sampled together.
            for t in (t for t in tools if isinstance(t, Kvmforge)):
                t.run()  # converge with this tool's own files (the KVM modules write headers)
                for pair in range(args.noop_pairs):
                    order = ("floor", t.name) if pair % 2 == 0 else (t.name, "floor")
                    for who in order:
                        if who == "floor":
                            r = floor(lab, wn, kex)
                        else:
                            r = t.run()
                            if r["changed"]:
                                raise RuntimeError(f"{t.name}: no-op run reported changes:\n{r['out'][-2000:]}")
                        r.pop("out", None)
                        runs[who]["noop"].append(r)
                    print(f"   {t.name:13} pair {pair + 1}: noop {runs[t.name]['noop'][-1]['wall']:.2f}s"
                          f"  floor {runs['floor']['noop'][-1]['wall']:.2f}s", flush=True)
            results["runs"][str(n)] = runs
            results["load"][str(n)] = {"before": before, "after": os.getloadavg()}
        finally:
            if not args.keep:
                lab.down()
        save(results, Path(args.out))
    return results


def med(rs, key="wall"):
    return statistics.median(r[key] for r in rs) if rs else None


def save(results, out, markdown=None, plot=None):
    """results.json, results.md and plot.png under `out`; the workload's own table and plot
    when given (the cluster workload's), this workload's otherwise."""
    markdown, plot = markdown or globals()["markdown"], plot or globals()["plot"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    try:
        plot(results, out / "plot.png")
    except Exception as e:  # the table matters more than the picture
        print(f"plot failed: {e}", file=sys.stderr)


NAMES = {"kvmforge": "kvmforge", "kvmforge-kvm": "kvmforge (KVM modules)", "pyinfra": "pyinfra",
         "ansible": "Ansible", "floor": "ssh floor"}
OTHERS = ("pyinfra", "ansible")


def markdown(results):
    m = results["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Linux {m['kernel']}. "
        f"Tools: {results['versions']['kvmforge']}, {results['versions']['pyinfra']}, "
        f"{results['versions']['ansible']}, {results['versions']['ssh']}.",
        f"Wall time in seconds, median of {results['reps']} runs "
        f"(Ansible: {results['slow_reps']}; kvmforge's no-op and the ssh floor: "
        f"{results['reps']} + {results.get('noop_pairs', 0)} runs, each extra one back to back with a floor run); "
        f"ratio = time / kvmforge's. "
        f"SSH key exchange: {results.get('kex', 'default')} for every tool.",
        "",
        "| hosts | run | kvmforge | kvmforge (KVM modules) | pyinfra | Ansible | ssh floor |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, runs in results["runs"].items():
        base = {mode: med(runs.get("kvmforge", {}).get(mode, [])) for mode in MODES}
        for mode in MODES:
            cells = []
            for tool in ("kvmforge", "kvmforge-kvm", "pyinfra", "ansible", "floor"):
                t = med(runs.get(tool, {}).get(mode, []))
                if t is None:
                    cells.append("—")
                elif tool in ("kvmforge", "kvmforge-kvm") or not base[mode]:
                    cells.append(f"{t:.2f}")
                else:
                    cells.append(f"{t:.2f} ({t / base[mode]:.2g}×)")
            lines.append(f"| {n} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Controller CPU seconds (the tool and the ssh processes it waits for) and peak memory "
              "(largest process), no-op run:", "",
              "| hosts | kvmforge | pyinfra | Ansible |", "|---:|---:|---:|---:|"]
    for n, runs in results["runs"].items():
        cells = []
        for tool in ("kvmforge", "pyinfra", "ansible"):
            rs = runs.get(tool, {}).get("noop", [])
            cells.append(f"{med(rs, 'cpu'):.2f} s, {max(r['rss_mb'] for r in rs):.0f} MB" if rs else "—")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if results.get("load"):
        lines += ["", "Load average (1 min) when each size started / ended: " + "; ".join(
            f"{n}: {l['before'][0]:.1f} / {l['after'][0]:.1f}" for n, l in results["load"].items()) + "."]
    lines += ["", "Targets (at 25 hosts or more):", ""]
    for n, runs in results["runs"].items():
        if int(n) < 25 or "kvmforge" not in runs:
            continue
        k = {mode: med(runs["kvmforge"][mode]) for mode in MODES}
        checks = []
        if runs.get("pyinfra", {}).get("noop"):
            checks.append(f"no-op {med(runs['pyinfra']['noop']) / k['noop']:.1f}× faster than pyinfra (target 2×)")
            checks.append(f"first run {med(runs['pyinfra']['first']) / k['first']:.1f}× faster than pyinfra (target 1.5×)")
        if runs.get("ansible", {}).get("noop"):
            checks.append(f"no-op {med(runs['ansible']['noop']) / k['noop']:.0f}× faster than Ansible (target 30×)")
        if runs.get("floor", {}).get("noop"):
            checks.append(f"no-op {k['noop'] / med(runs['floor']['noop']):.2f}× the ssh floor (target ≤ 1.15×)")
        mem = max(r["rss_mb"] for mode in MODES for r in runs["kvmforge"][mode])
        checks.append(f"peak memory {mem:.0f} MB (target ≤ 40 MB at 200 hosts)")
        lines.append(f"- {n} hosts: " + "; ".join(checks))
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in results["runs"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, mode in zip(axes, MODES):
        for tool in ("kvmforge", "kvmforge-kvm", "pyinfra", "ansible", "floor"):
            pts = [(n, med(results["runs"][str(n)].get(tool, {}).get(mode, []))) for n in ns]
            pts = [(n, t) for n, t in pts if t is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=NAMES[tool])
        ax.set_title({"first": "first run (fresh hosts)", "noop": "no-op re-run (drift check)",
                      "drift": "re-run after drift"}[mode])
        ax.set_xlabel("hosts")
        ax.set_ylabel("seconds (log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    axes[0].legend(handles.values(), handles.keys())
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=("files", "cluster"), default="files",
                   help="files: the ten-task file workload; cluster: playbooks/jumphost-cluster.yaml "
                        "(a jump host and N KVM hosts behind it)")
    p.add_argument("--hosts", default="", help="comma-separated host counts (KVM hosts for the cluster; "
                   "default 1,10,25,50,100 for files, 10,25,50 for cluster)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per tool (median is reported)")
    p.add_argument("--slow-reps", type=int, default=1, help="repetitions for Ansible")
    p.add_argument("--noop-pairs", type=int, default=5,
                   help="extra no-op runs of each kvmforge variant, each alternated with the ssh floor")
    p.add_argument("--tools", default="", help="only these tools (kvmforge,kvmforge-kvm,pyinfra,ansible)")
    p.add_argument("--tag", default="", help="suffix of the results directory (e.g. 200 for a separate run)")
    p.add_argument("--venv", required=True)
    p.add_argument("--kvmforge", required=True, help="the kvmforge binary")
    p.add_argument("--work", default="/var/tmp/kvmforge-bench/work")
    p.add_argument("--out", default="", help="default bench/results/WORKLOAD[-kex-default]")
    p.add_argument("--keep", action="store_true", help="leave the hosts running")
    p.add_argument("--kex", default="curve25519-sha256",
                   help="SSH key exchange for the OpenSSH-based tools and the floor: pyinfra's paramiko "
                        "cannot negotiate OpenSSH's default post-quantum sntrup761x25519, whose CPU cost "
                        "dominates every run on one machine; 'default' leaves OpenSSH's choice")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("the benchmark boots test hosts and must run as root")
    if not args.hosts:
        args.hosts = "10,25,50" if args.workload == "cluster" else "1,10,25,50,100"
    if not args.out:
        name = args.workload + ("-kex-default" if args.kex == "default" else "") + (f"-{args.tag}" if args.tag else "")
        args.out = str(HERE / "results" / name)
    if args.workload == "cluster":
        import cluster
        cluster.bench(args)
    else:
        bench(args)
    print((Path(args.out) / "results.md").read_text())


if __name__ == "__main__":
    main()
