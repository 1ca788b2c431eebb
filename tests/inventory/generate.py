#!/usr/bin/env python3
"""Regenerate the expected results of the inventory corpus with Ansible itself.

    tests/inventory/generate.py [--ansible-bin DIR] [CASE...]

Each folder in cases/ holds inventory files and `args` (one `-i` argument per line, relative to
the folder). For each case this writes `expected.json` from what ansible-core says:
  - `ansible-inventory --list`: the hosts, their groups (transitively, `all` included) and their
    merged variables;
  - `ansible all --list-hosts`: the order hosts are taken in (null when Ansible's own order
    varies between runs, which it does for hosts only reachable through grandchild groups);
  - `ansible HOST -m ping` with a stand-in `ssh` that records its command line and fails: the
    address, user, port and key Ansible would connect with, and the options it passes from
    ansible_ssh_common_args/ansible_ssh_extra_args.
When Ansible refuses the inventory, `expected.json` is {"error": MESSAGE}.
Needs ansible-core (pip install ansible-core); `cargo test` reads only the JSON files.
"""
import argparse, concurrent.futures, json, os, pathlib, shutil, subprocess, sys, tempfile

HERE = pathlib.Path(__file__).resolve().parent
FAKE_SSH = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_SSH_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(255)
"""
# Options Ansible's ssh connection adds itself; everything between ConnectTimeout and
# ControlPath comes from the inventory's ssh arguments.
ANSIBLE_OWN = ("ControlMaster=", "ControlPersist=", "KbdInteractiveAuthentication=",
               "PreferredAuthentications=", "PasswordAuthentication=", "NumberOfPasswordPrompts=")


def env(tmp, extra=None):
    e = dict(os.environ)
    e.update({
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "tmp"),
        "ANSIBLE_HOME": str(tmp / "home"),
        "ANSIBLE_SSH_EXECUTABLE": str(tmp / "ssh"),
        "ANSIBLE_CONFIG": str(tmp / "none.cfg"),
    })
    e.update(extra or {})
    return e


def inv_args(case):
    out = []
    for line in (case / "args").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out += ["-i", line if "," in line and not (case / line).exists() else str(case / line)]
    return out


def unquote(v):
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v


def connection(tool, case, tmp, host):
    log = tmp / f"ssh-{abs(hash(host))}.log"
    limit = tmp / f"limit-{abs(hash(host))}"
    limit.write_text(host + "\n")
    r = subprocess.run([tool("ansible"), "all", *inv_args(case), "--limit", f"@{limit}", "-m", "ping", "-o"],
                       cwd=tmp, env=env(tmp, {"FAKE_SSH_LOG": str(log)}), capture_output=True, text=True)
    if not log.exists():
        return {"ssh": False, "ansible_says": (r.stdout + r.stderr).strip().splitlines()[-1:]}
    argv = json.loads(log.read_text().splitlines()[0])
    c = {"ssh": True, "address": argv[-2], "user": None, "port": None, "key": None,
         "host_key_checking": True, "args": []}
    i = 0
    user_args_from = user_args_to = None
    while i < len(argv) - 2:
        a = argv[i]
        if a == "-o":
            v = argv[i + 1]
            if v.startswith("ConnectTimeout="):
                user_args_from = i + 2
            elif v.startswith("ControlPath="):
                user_args_to = i
            elif user_args_from is None:
                if v.startswith("User="):
                    c["user"] = unquote(v[5:])
                elif v.startswith("Port="):
                    c["port"] = int(v[5:])
                elif v.startswith("IdentityFile="):
                    c["key"] = unquote(v[13:])
                elif v == "StrictHostKeyChecking=no":
                    c["host_key_checking"] = False
                elif not v.startswith(ANSIBLE_OWN):
                    raise SystemExit(f"{case.name}/{host}: unexpected ssh option {v}")
            i += 2
        else:
            i += 1
    c["args"] = argv[user_args_from:user_args_to]
    return c


def generate(tool, case):
    with tempfile.TemporaryDirectory() as t:
        tmp = pathlib.Path(t)
        (tmp / "ssh").write_text(FAKE_SSH)
        (tmp / "ssh").chmod(0o755)
        (tmp / "none.cfg").write_text("")
        r = subprocess.run([tool("ansible-inventory"), *inv_args(case), "--list"], cwd=tmp, env=env(tmp),
                           capture_output=True, text=True)
        if r.returncode != 0:
            msg = " ".join((r.stderr or r.stdout).split()).replace(str(HERE), "tests/inventory")
            return {"error": msg}
        # Ansible writes a `!unsafe` string as {"__ansible_unsafe": TEXT}; its value is TEXT.
        data = json.loads(r.stdout, object_hook=lambda o: o["__ansible_unsafe"] if set(o) == {"__ansible_unsafe"} else o)
        hostvars = data.pop("_meta", {}).get("hostvars", {})
        parents = {}
        for g, body in data.items():
            for c in body.get("children", []):
                parents.setdefault(c, set()).add(g)
        def up(g, seen):
            for p in parents.get(g, ()):
                if p not in seen:
                    seen.add(p)
                    up(p, seen)
        hosts = {}
        for g, body in data.items():
            for h in body.get("hosts", []):
                groups = hosts.setdefault(h, {"groups": {"all"}})["groups"]
                groups.add(g)
                up(g, groups)
        orders = []
        for seed in ("1", "2", "3"):
            r = subprocess.run([tool("ansible"), "all", *inv_args(case), "--list-hosts"], cwd=tmp,
                               env=env(tmp, {"PYTHONHASHSEED": seed}), capture_output=True, text=True, check=True)
            orders.append([l.strip() for l in r.stdout.splitlines()[1:] if l.strip()])
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            conns = dict(zip(hosts, pool.map(lambda h: connection(tool, case, tmp, h), hosts)))
        return {
            "order": orders[0] if all(o == orders[0] for o in orders) else None,
            "hosts": {h: {"groups": sorted(v["groups"]), "vars": hostvars.get(h, {}),
                          "connection": conns[h]} for h, v in hosts.items()},
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ansible-bin", help="folder with ansible and ansible-inventory (default: PATH)")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    def tool(name):
        p = os.path.join(a.ansible_bin, name) if a.ansible_bin else shutil.which(name)
        if not p or not os.path.exists(p):
            sys.exit(f"{name} not found: pip install ansible-core, or give --ansible-bin")
        return p
    version = subprocess.run([tool("ansible"), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    cases = [HERE / "cases" / c for c in a.cases] or sorted(p for p in (HERE / "cases").iterdir() if p.is_dir())
    for case in cases:
        result = generate(tool, case)
        result = {"generated_by": version, **result}
        (case / "expected.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"{case.name}: {'error' if 'error' in result else str(len(result['hosts'])) + ' hosts'}")


if __name__ == "__main__":
    main()
