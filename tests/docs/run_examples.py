#!/usr/bin/env python3
"""Runs every fenced example block of README.md and docs/*.md (meson test docs-examples).

  run_examples.py --source DIR --build DIR [--cc CC] [--lib LIB.a]... [--sanitize OPTS] [FILE...]
  run_examples.py --extract FILE NAME    print the block right after the line starting "<!-- NAME"

Prints "ok - FILE:LINE KIND block runs" or "not ok - FILE:LINE KIND block: why" per block, then
"N passed, M failed" (blocks not run are listed, and counted on the line before it).

What a block is, by the first word of its info string (a block without one fails: say what it is):
  sh    shell. The shell blocks of a file run in order in one bash, in a fresh temporary directory (below),
        so that one block can set up what the next uses. A command that fails fails the block (a trap on ERR,
        not set -e: the shell and its variables carry on to the next block).
  conf  a mosquitto.conf. With a listener, the runner starts a real mosquitto with it (adding only its log
        lines), waits until each process's compartment is certified, sends an event through every echo
        process (as store, received as sink, with a password_file's user if it has one), and leaves that
        broker running for the file's later blocks. Without a listener: added to a configuration with one and
        checked to be accepted.
  c     C. A logic (defines idevs_logic_entry) is built as a shared object with only enclave-bridge/ and base/
        on the include path and loaded (tests/docs/docs_check.c). A program (defines main) is compiled and
        linked with the service library. Anything else is a fragment: compiled as a function body, with the
        names the marker lists ("given NAME, ...") declared by the runner (FRAGMENT_DECLS below).
  json  parsed. A deployment descriptor (an object with "version" and "process") must also pass
        idevs_deployment_parse(), with placeholders written "<...>" replaced by stand-ins of their kind.
  sql   executed by SQLite in an empty in-memory database.
  text  not code (a diagram, a formula, a synopsis with [OPTIONS], a program's output): nothing to run.

A marker, an HTML comment on the line right before the fence, holds "example:" and then directives separated
by ";":
  <!-- example: not run (WHY) -->      a code block that cannot run here, and why (listed at the end)
  <!-- example: given on_message, why -->   a C fragment's free names
  <!-- example: output contains "TEXT" -->  the block's output must contain TEXT
  <!-- example: run as taxi -->        a C program run as the rewards process's taxi (below)
Other text in the comment before "example:" is free (e.g. a name that another test extracts with --extract).

What the shell and configuration blocks of a file get (their text is rewritten first, as printed in a failure):
  - the working directory: a fresh temporary directory, which also stands for /etc/idevs/ (so /etc/idevs/pki/
    is ./pki/); /var/lib/idevs is ./state, /etc/mosquitto/ ./mosquitto/, /var/lib/mosquitto/ ./persist/;
    ./build is a link to the build directory, ./services and ./scripts to the checkout's;
  - the installed paths of mosquitto_idevs.so, idevs-compartment and idevs_logic_echo.so are the build's (a
    configuration without plugin_opt_compartment, whose default is the installed program, gets the build's);
  - port 1883 is a free loopback port (also $IDEVS_EXAMPLE_PORT), and on PATH first are wrappers of
    mosquitto_sub, mosquitto_pub, idevs-sub and idevs-pub that connect to it by default, and of mosquitto
    (with the AddressSanitizer runtime preloaded for a sanitized plugin);
  - then on PATH the build's tools: certs/tool (idevs-ca), proto/tool (idevs-envelope), services/tools
    (idevs-pub, idevs-sub), and store, taxi, messaging, points;
  - $IDEVS the working directory, which looks like a checkout built in build/ (its links above), $IDEVS_BUILD
    the build directory;
  - a configuration block's files that no earlier block made are made by the runner: a PKI (idevs-ca init,
    then identities for store, sink, taxi, messaging and points), the descriptor echo*.json (the echo logic,
    process named after the file, store -> sink) or rewards.json (services/rewards/make_descriptor), the state
    and persistence directories, a password file with users store and sink.
As root, the working directory is given to the mosquitto user before a broker starts (Mosquitto 2.0.11
drops to it before it loads plugins).

"run as taxi": the runner starts a broker with the rewards process, runs the program as taxi, messaging with
idevs-sub, publishes a sale of 150.00 as store and expects the confirmation at messaging.

Each block is bounded in time (BLOCK_TIMEOUT_S); every process the runner or a block starts is ended by its pid
at the end of its file (the blocks' shell and its descendants, the brokers), and the temporary directories are
removed (KEEP=1 keeps them and prints where).
"""
import argparse
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

BLOCK_TIMEOUT_S = 240
BROKER_START_S = 30
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*(.*)$")
MARKER = re.compile(r"<!--.*?\bexample:\s*(.*?)\s*-->")
SALE = ('{"sale_id":"S-000042","time":"2026-11-21T10:15:00Z","customer":{"id":"C-0007","name":"Ana Lima",'
        '"phone":"+44 7700 900123","address":"12 Harbour Street, Leith, Edinburgh EH6 6LA"},'
        '"items":[{"sku":"JKT-204","name":"Rain jacket","qty":1,"price":"150.00"}],"total":"150.00"}')

# The free names of C fragments, by name (declared at file scope before the fragment's function).
FRAGMENT_DECLS = {
    "on_message": "static void on_message(idevs_service *s, const idevs_service_message *m, void *a)"
                  " { (void)s; (void)m; (void)a; }",
    "why": "static char why[256];",
    "on_receipt": "static void on_receipt(idevs_service *s, const idevs_msgid *id, const char *key, void *a)"
                  " { (void)s; (void)id; (void)key; (void)a; }",
    "sale_id": "static const char *sale_id = \"S-000042\";",
    "customer_id": "static const char *customer_id = \"C-0007\";",
    "sale_json": "static const char *sale_json = \"{}\";",
    "chain_der": "static const uint8_t *const *chain_der;",
    "chain_len": "static const size_t *chain_len;",
    "chain_count": "static size_t chain_count;",
    "process_uuid": "static idevs_uuid process_uuid;",
    "sale": "static const uint8_t *sale;",
    "sale_len": "static size_t sale_len;",
    "topic": "static const char *topic = \"\";",
    "data": "static const uint8_t *data;",
    "len": "static size_t len;",
    "svc": "static idevs_service *svc;",
    "json": "static const char *json = \"{}\";",
    "err": "static idevs_err err;  /* then <err.h> is left out: its err() would clash */",
}


class Block:
    def __init__(self, path, line, info, text, marker):
        self.path, self.line, self.text = path, line, text
        self.kind = info.split()[0] if info.split() else ""
        self.marker = marker or ""
        self.directives = [d.strip() for d in marker.split(";") if d.strip()] if marker else []

    def directive(self, prefix):
        if prefix == "not run" and self.marker.startswith(prefix):  # its reason may hold ";"
            return self.marker[len(prefix):].strip()
        for d in self.directives:
            if d.startswith(prefix):
                return d[len(prefix):].strip()
        return None


def blocks_of(path, rel):
    """The fenced blocks of a Markdown file, with the marker right before each."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3)
        start, body = i, []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        prev = lines[start - 1] if start > 0 else ""
        mk = MARKER.search(prev)
        out.append(Block(rel, start + 1, info, "\n".join(body) + "\n", mk.group(1) if mk else None))
    return out


def extract(path, name):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("<!-- " + name) and i + 1 < len(lines) and FENCE.match(lines[i + 1]):
            rel = os.path.basename(path)
            for b in blocks_of(path, rel):
                if b.line == i + 2:
                    return b.text
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def descendants(pid):
    """Every live descendant of pid, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, to_visit = [], [pid]
    while to_visit:
        for c in children.get(to_visit.pop(), []):
            out.append(c)
            to_visit.append(c)
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def end_pids(pids, grace_s=5.0):
    """SIGTERM each pid, wait up to grace_s, SIGKILL what is left."""
    pids = [p for p in pids if alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + grace_s
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def end_tree(proc):
    """Ends a process we started and all its descendants, by pid, and reaps it."""
    if proc is None:
        return
    tree = descendants(proc.pid)
    end_pids([proc.pid] + tree)
    end_pids(descendants(proc.pid) + tree, 1.0)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class Runner:
    def __init__(self, args):
        self.src = os.path.abspath(args.source)
        self.build = os.path.abspath(args.build)
        self.cc = args.cc.split()  # the compiler command, possibly with a wrapper (ccache cc)
        self.libs = args.lib
        self.sanitize = [] if args.sanitize in (None, "", "none") else ["-fsanitize=" + args.sanitize]
        self.passed = self.failed = 0
        self.not_run = []
        self.keep = bool(os.environ.get("KEEP"))
        self.b = lambda *p: os.path.join(self.build, *p)
        self.plugin = self.b("plugin", "mosquitto_idevs.so")
        self.preload = ""
        nm = subprocess.run(["nm", "-D", self.plugin], capture_output=True, text=True)
        if " U __asan_" in nm.stdout:
            self.preload = subprocess.run(self.cc + ["-print-file-name=libasan.so"], capture_output=True,
                                          text=True).stdout.strip()

    # ---- reporting ----
    def ok(self, b, what):
        self.passed += 1
        print(f"ok - {b.path}:{b.line} {what}", flush=True)

    def not_ok(self, b, what, detail=""):
        self.failed += 1
        print(f"not ok - {b.path}:{b.line} {what}", flush=True)
        for line in detail.strip().split("\n")[-40:]:
            if line:
                print("    " + line)

    # ---- one file ----
    def run_file(self, path, rel):
        blocks = blocks_of(path, rel)
        if not blocks:
            return
        self.work = tempfile.mkdtemp(prefix="idevs-docs.")
        self.port = free_port()
        self.shell = None
        self.broker = None
        self.broker_log = None
        self.conf_count = 0
        try:
            self.prepare_work()
            for b in blocks:
                self.run_block(b)
        finally:
            self.stop_shell()
            self.stop_broker()
            if self.keep:
                print(f"# {rel}: kept {self.work}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)

    def prepare_work(self):
        w = self.work
        os.symlink(self.build, os.path.join(w, "build"))
        for d in ("services", "scripts"):
            os.symlink(os.path.join(self.src, d), os.path.join(w, d))
        bindir = os.path.join(w, ".bin")
        os.mkdir(bindir)
        wrap = {
            "mosquitto_sub": "/usr/bin/mosquitto_sub", "mosquitto_pub": "/usr/bin/mosquitto_pub",
            "idevs-sub": self.b("services", "tools", "idevs-sub"), "idevs-pub": self.b("services", "tools", "idevs-pub"),
        }
        for name, real in wrap.items():
            real = shutil.which(name, path="/usr/bin:/bin") if real.startswith("/usr/bin") else real
            with open(os.path.join(bindir, name), "w") as f:
                f.write(f'#!/bin/sh\nexec {real} -p "$IDEVS_EXAMPLE_PORT" "$@"\n')
            os.chmod(os.path.join(bindir, name), 0o755)
        mosq = shutil.which("mosquitto", path="/usr/sbin:/usr/bin:/sbin:/bin")
        with open(os.path.join(bindir, "mosquitto"), "w") as f:
            if self.preload:
                f.write(f'#!/bin/sh\nASAN_OPTIONS=detect_leaks=0 LD_PRELOAD={self.preload} exec {mosq} "$@"\n')
            else:
                f.write(f'#!/bin/sh\nexec {mosq} "$@"\n')
        os.chmod(os.path.join(bindir, "mosquitto"), 0o755)
        path = [bindir] + [self.b(*p) for p in (("certs", "tool"), ("proto", "tool"), ("services", "tools"),
                                                ("services", "store"), ("services", "taxi"),
                                                ("services", "messaging"), ("services", "points"))]
        self.env = dict(os.environ, PATH=":".join(path + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]),
                        IDEVS=w, IDEVS_BUILD=self.build, IDEVS_EXAMPLE_PORT=str(self.port), HOME=w)
        self.env.pop("LD_PRELOAD", None)

    def rewrite(self, text):
        w = self.work
        subs = [
            (r"(?m)^listener 1883\s*$", f"listener {self.port} 127.0.0.1"),
            (r"\b1883\b", str(self.port)),
            (r"/usr/local/lib/x86_64-linux-gnu/mosquitto/mosquitto_idevs\.so", self.plugin),
            (r"/usr/local/libexec/idevs/idevs-compartment", self.b("enclave-bridge", "compartment", "idevs-compartment")),
            (r"/usr/local/lib/idevs/idevs_logic_echo\.so", self.b("tests", "logic", "idevs_logic_echo.so")),
            (r"/etc/idevs/", w + "/"), (r"/etc/idevs\b", w),
            (r"/var/lib/idevs\b", w + "/state"),
            (r"/etc/mosquitto/", w + "/mosquitto/"), (r"/var/lib/mosquitto/", w + "/persist/"),
        ]
        for pat, rep in subs:
            text = re.sub(pat, lambda _m, r=rep: r, text)
        return text

    def run_block(self, b):
        why_not = b.directive("not run")
        if why_not is not None:
            self.not_run.append(f"{b.path}:{b.line} ({b.kind or 'no info string'}) {why_not.strip('() ')}")
            print(f"# {b.path}:{b.line} {b.kind} block not run: {why_not.strip('() ')}")
            return
        handler = {"sh": self.run_sh, "conf": self.run_conf, "c": self.run_c, "json": self.run_json,
                   "sql": self.run_sql}.get(b.kind)
        if b.kind == "text":
            print(f"# {b.path}:{b.line} text block: not code")
            return
        if handler is None:
            self.not_ok(b, f"block with info string '{b.kind}'",
                        "every block says what it is: sh, conf, c, json, sql or text (tests/docs/run_examples.py)")
            return
        try:
            handler(b)
        except Exception as e:  # a runner fault counts against the block, and the run goes on
            self.not_ok(b, f"{b.kind} block: the runner failed", repr(e))

    # ---- shell ----
    def start_shell(self):
        self.shell = subprocess.Popen(["bash", "--norc", "--noprofile"], stdin=subprocess.PIPE, cwd=self.work,
                                      env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, text=True)

    def stop_shell(self):
        if self.shell is not None:
            # Its descendants first (once the shell exits they are no longer its children), then the shell.
            end_pids(descendants(self.shell.pid))
            try:
                self.shell.stdin.close()
            except OSError:
                pass
            end_tree(self.shell)
            self.shell = None

    def shell_run(self, text, name, timeout=BLOCK_TIMEOUT_S):
        """Runs text in the file's shell; returns (status, failed commands, output)."""
        if self.shell is None or self.shell.poll() is not None:
            self.start_shell()
        script = os.path.join(self.work, f".{name}.sh")
        out = os.path.join(self.work, f".{name}.out")
        rc = os.path.join(self.work, f".{name}.rc")
        with open(script, "w") as f:
            f.write(text)
        cmd = (f"__errs=0; trap '__errs=$((__errs + 1)); echo \"(status $? at line $LINENO)\"' ERR; "
               f"source {script} >{out} 2>&1 </dev/null; __st=$?; trap - ERR; "
               f"echo \"$__st $__errs\" >{rc}.tmp; mv {rc}.tmp {rc}\n")
        try:
            self.shell.stdin.write(cmd)
            self.shell.stdin.flush()
        except OSError:
            return None, 0, "the shell is gone"
        deadline = time.time() + timeout
        while time.time() < deadline and not os.path.exists(rc) and self.shell.poll() is None:
            time.sleep(0.1)
        output = open(out, errors="replace").read() if os.path.exists(out) else ""
        if not os.path.exists(rc):
            self.stop_shell()
            return None, 0, output + f"\n(did not finish within {timeout} s: its shell was ended)"
        st, errs = open(rc).read().split()
        return int(st), int(errs), output

    def run_sh(self, b):
        text = self.rewrite(b.text)
        st, errs, output = self.shell_run(text, f"block{b.line}")
        want = b.directive("output contains")
        if st is None or st != 0 or errs:
            self.not_ok(b, "sh block runs", output + f"\n(exit status {st}, {errs} failed command(s))\n--- as run:\n"
                        + text)
        elif want is not None and want.strip('"') not in output:
            self.not_ok(b, f"sh block runs and prints {want}", output)
        else:
            self.ok(b, "sh block runs" + (f" and prints {want}" if want else ""))

    # ---- mosquitto.conf ----
    def provision_pki(self, pki):
        if not os.path.exists(os.path.join(pki, "ca.crt")):
            self.tool(["idevs-ca", "init", pki, "--name", "docs-example-ca"])
        for s in ("store", "sink", "taxi", "messaging", "points"):
            if not os.path.exists(os.path.join(pki, s + ".crt")):
                self.tool(["idevs-ca", "service", pki, s])

    def tool(self, argv):
        r = subprocess.run(argv, env=self.env, cwd=self.work, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
        return r.stdout

    def uuid_of(self, cert):
        out = self.tool(["idevs-ca", "show", cert])
        return re.search(r"^name: urn:uuid:(\S+)", out, re.M).group(1)

    def provision_descriptor(self, path, pki):
        name = os.path.basename(path)[:-len(".json")]
        if name == "rewards":
            self.tool([os.path.join(self.src, "services", "rewards", "make_descriptor"), pki, "--logic",
                       self.b("services", "rewards", "librewards.so"), "--out", path])
            return
        if not name.startswith("echo"):
            raise RuntimeError(f"{path}: no block made it, and the runner makes only echo*.json and rewards.json")
        der = subprocess.run(["openssl", "x509", "-in", os.path.join(pki, "ca.crt"), "-outform", "DER"],
                             capture_output=True, check=True).stdout
        d = {
            "version": 1,
            "process": {"name": name, "uuid": str(uuid.uuid4()),
                        "logic": self.b("tests", "logic", "idevs_logic_echo.so"), "config": {}},
            "operator_ca_sha256": hashlib.sha256(der).hexdigest(),
            "services": [{"name": s, "uuid": self.uuid_of(os.path.join(pki, s + ".crt")),
                          "certificate": os.path.join(pki, s + ".crt")} for s in ("store", "sink")],
            "inputs": [{"name": "events", "topic": f"idevs/{name}/in/events", "from": "store"}],
            "outputs": [{"name": "out", "topic": f"idevs/{name}/out/out", "to": "sink", "qos": 1}],
            "requests": [{"name": "ask", "topic": f"idevs/{name}/req/ask", "response_topic": f"idevs/{name}/resp/ask",
                          "to": "sink", "qos": 1}],
            "limits": {"max_payload": 65536, "queue_depth": 1024, "event_timeout_ms": 2000},
        }
        with open(path, "w") as f:
            json.dump(d, f, indent=1)

    def own_work(self):
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("mosquitto")
            except KeyError:
                return
            for root, dirs, files in os.walk(self.work):
                for n in dirs + files:
                    try:
                        os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
                    except OSError:
                        pass
            os.chown(self.work, pw.pw_uid, pw.pw_gid)

    def stop_broker(self):
        if self.broker is not None:
            end_tree(self.broker)
            self.broker = None

    def start_broker(self, conf_text, name):
        """Writes conf_text (with the runner's log lines) and starts mosquitto; returns (conf, log)."""
        self.stop_broker()
        conf = os.path.join(self.work, name + ".conf")
        log = conf + ".log"
        with open(conf, "w") as f:
            f.write(conf_text + f"\nlog_dest file {log}\nlog_type all\n")
        self.own_work()
        mosq = os.path.join(self.work, ".bin", "mosquitto")
        self.broker = subprocess.Popen([mosq, "-c", conf], stdout=open(conf + ".out", "w"),
                                       stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
                                       start_new_session=True)
        self.broker_log = log
        return conf, log

    def wait_certified(self, log, count):
        deadline = time.time() + BROKER_START_S
        while time.time() < deadline:
            text = open(log, errors="replace").read() if os.path.exists(log) else ""
            if text.count("compartment certified") >= count:
                return True, text
            if self.broker.poll() is not None:
                return False, text + open(log.replace(".log", ".out")).read()
            time.sleep(0.1)
        return False, text + f"\n(not {count} compartment(s) certified within {BROKER_START_S} s)"

    def roundtrip(self, name, auth):
        """store -> the echo process NAME -> sink, with idevs-pub and idevs-sub."""
        common = ["--pki", os.path.join(self.work, "pki"), "--process", name, "--policy",
                  "allow-process-backend-insecure", "-p", str(self.port)]
        sub = subprocess.Popen([self.b("services", "tools", "idevs-sub"), "--name", "sink"] + common +
                               auth.get("sink", []) + ["-C", "1", "-W", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, text=True)
        try:
            time.sleep(1.5)
            payload = f"hello {name}"
            pub = subprocess.run([self.b("services", "tools", "idevs-pub"), "--name", "store"] + common +
                                 auth.get("store", []) + ["-t", "events", "-m", payload],
                                 capture_output=True, text=True, env=self.env, timeout=30)
            out, _ = sub.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            end_tree(sub)
            return False, "timed out"
        if pub.returncode == 0 and payload in out.split("\n"):
            return True, ""
        return False, f"idevs-pub: {pub.stdout}{pub.stderr}\nidevs-sub: {out}"

    def run_conf(self, b):
        text = self.rewrite(b.text)
        options = {}
        for line in text.split("\n"):
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and not parts[0].startswith("#"):
                options.setdefault(parts[0], []).append(parts[1].strip())
        self.conf_count += 1
        name = f"block{b.line}"
        if "plugin" in options and "plugin_opt_compartment" not in options:
            lines = text.rstrip("\n").split("\n")
            last = max(i for i, l in enumerate(lines) if l.startswith(("plugin ", "plugin_opt_")))
            lines.insert(last + 1, "plugin_opt_compartment " + self.b("enclave-bridge", "compartment", "idevs-compartment"))
            text = "\n".join(lines) + "\n"
        if "listener" not in options:  # a part of a configuration: accepted beside a listener?
            conf, log = self.start_broker(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n" + text, name)
            time.sleep(1.0)
            if self.broker.poll() is None:
                self.ok(b, "conf block is accepted by mosquitto")
            else:
                self.not_ok(b, "conf block is accepted by mosquitto", open(log).read())
            self.stop_broker()
            return
        descriptors = options.get("plugin_opt_descriptor", [])
        auth = {}
        key = options.get("plugin_opt_authority_key", [None])[0]
        if key and not os.path.exists(key):
            self.provision_pki(os.path.dirname(key))
        for d in descriptors:
            if not os.path.exists(d):
                self.provision_descriptor(d, os.path.dirname(key) if key else os.path.join(self.work, "pki"))
        for opt in ("plugin_opt_state_dir",):
            for d in options.get(opt, []):
                os.makedirs(d, mode=0o700, exist_ok=True)
        for d in options.get("persistence_location", []):
            os.makedirs(d, exist_ok=True)
        for pw in options.get("password_file", []):
            if not os.path.exists(pw):
                os.makedirs(os.path.dirname(pw), exist_ok=True)
                for i, user in enumerate(("store", "sink")):
                    subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) +
                                   [pw, user, "pw-" + user], check=True, env=self.env, capture_output=True)
                os.chmod(pw, 0o600)
            auth = {u: ["-u", u, "-P", "pw-" + u] for u in ("store", "sink")}
        conf, log = self.start_broker(text, name)
        started, logtext = self.wait_certified(log, len(descriptors))
        if not started:
            self.not_ok(b, "conf block: the broker starts", logtext + "\n--- as run:\n" + text)
            self.stop_broker()
            return
        for d in descriptors:
            pname = json.load(open(d))["process"]["name"]
            if pname.startswith("echo"):
                ok, detail = self.roundtrip(pname, auth)
                if not ok:
                    self.not_ok(b, f"conf block: an event goes through process '{pname}'",
                                detail + "\n--- the broker's log:\n" + open(log, errors="replace").read()[-3000:]
                                + "\n--- as run:\n" + text)
                    return
        for state in options.get("plugin_opt_state_dir", []):
            for d in descriptors:
                key_file = os.path.join(state, json.load(open(d))["process"]["name"], "sealing.key")
                if not os.path.exists(key_file):
                    return self.not_ok(b, "conf block: each process keeps its state in <state_dir>/<process>/",
                                       f"no {key_file}")
        self.ok(b, f"conf block runs: mosquitto starts, {len(descriptors)} process(es) certified"
                + (", echo round trips" if any("echo" in os.path.basename(d) for d in descriptors) else ""))

    # ---- C ----
    def cflags(self, logic=False):
        if logic:
            dirs = [os.path.join(self.src, "enclave-bridge"), os.path.join(self.src, "base")]
        else:
            dirs = [os.path.join(self.src, d) for d in ("base", "certs", "proto", "enclave-bridge", "services/lib")]
            dirs += [self.b(d) for d in ("base", "certs", "proto", "enclave-bridge")]
        return ["-std=c11", "-D_GNU_SOURCE", "-O1"] + self.sanitize + ["-I" + d for d in dirs]

    def compile(self, argv):
        r = subprocess.run(self.cc + argv, capture_output=True, text=True, timeout=120)
        return r.returncode == 0, r.stdout + r.stderr

    def run_c(self, b):
        d = os.path.join(self.work, f"c{b.line}")
        os.mkdir(d)
        src = os.path.join(d, "example.c")
        if "idevs_logic_entry" in b.text:
            with open(src, "w") as f:
                f.write(b.text)
            so = os.path.join(d, "logic.so")
            ok, out = self.compile(self.cflags(True) + ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                                                        "-shared", "-fPIC", src, "-o", so])
            if not ok:
                return self.not_ok(b, "c logic builds with enclave-bridge/ and base/ alone", out)
            r = subprocess.run([self.b("tests", "docs", "docs_check"), "logic", so], capture_output=True, text=True,
                               env=dict(self.env, LD_PRELOAD=self.preload) if self.preload else self.env)
            if r.returncode != 0:
                return self.not_ok(b, "c logic loads", r.stderr)
            return self.ok(b, "c logic builds and loads")
        if re.search(r"\bint\s+main\s*\(", b.text):
            with open(src, "w") as f:
                f.write(b.text)
            exe = os.path.join(d, "example")
            ok, out = self.compile(self.cflags() + ["-Wall", "-Wextra", "-Werror", src, "-o", exe] + self.libs +
                                   ["-lmosquitto", "-lsqlite3", "-lcjson", "-lprotobuf-c", "-lcrypto", "-ltss2-mu",
                                    "-luuid", "-lpthread"])
            if not ok:
                return self.not_ok(b, "c program builds", out)
            if b.directive("run as taxi") is not None:
                return self.run_as_taxi(b, exe)
            return self.ok(b, "c program builds")
        given = [n.strip() for n in (b.directive("given") or "").split(",") if n.strip()]
        unknown = [n for n in given if n not in FRAGMENT_DECLS]
        if unknown:
            return self.not_ok(b, "c fragment", f"the runner declares no {', '.join(unknown)} (FRAGMENT_DECLS)")
        includes = [l for l in b.text.split("\n") if l.startswith("#include")]
        body = "\n".join(l for l in b.text.split("\n") if not l.startswith("#include"))
        with open(src, "w") as f:
            f.write(("" if "err" in given else "#include <err.h>\n") + "#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
                    "#include <string.h>\n#include \"idevs_envelope.h\"\n#include \"idevs_service.h\"\n")
            f.write("\n".join(includes) + "\n")
            f.write("\n".join(FRAGMENT_DECLS[n] for n in given) + "\n")
            f.write(f"void idevs_example(void);\nvoid idevs_example(void)\n{{\n#line 1 \"{b.path}:{b.line}\"\n"
                    f"{body}\n}}\n")
        ok, out = self.compile(self.cflags() + ["-Wall", "-Werror=implicit-function-declaration",
                                                "-Werror=incompatible-pointer-types", "-Werror=int-conversion",
                                                "-c", src, "-o", os.path.join(d, "example.o")])
        if not ok:
            return self.not_ok(b, "c fragment compiles", out)
        self.ok(b, "c fragment compiles" + (f" (given {', '.join(given)})" if given else ""))

    def run_as_taxi(self, b, exe):
        pki = os.path.join(self.work, "pki")
        self.provision_pki(pki)
        self.provision_descriptor(os.path.join(self.work, "rewards.json"), pki)
        os.makedirs(os.path.join(self.work, "state"), mode=0o700, exist_ok=True)
        conf = "\n".join([
            f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"plugin {self.plugin}",
            f"plugin_opt_descriptor {self.work}/rewards.json", f"plugin_opt_authority_key {pki}/authority.key",
            f"plugin_opt_authority_cert {pki}/authority.crt", f"plugin_opt_operator_ca {pki}/ca.crt",
            f"plugin_opt_state_dir {self.work}/state",
            "plugin_opt_compartment " + self.b("enclave-bridge", "compartment", "idevs-compartment"),
            "plugin_opt_acl_others allow"])
        _, log = self.start_broker(conf, f"taxi{b.line}")
        started, logtext = self.wait_certified(log, 1)
        if not started:
            return self.not_ok(b, "c program runs as taxi: the broker starts", logtext)
        common = ["--pki", pki, "--process", "rewards", "--policy", "allow-process-backend-insecure",
                  "-p", str(self.port)]
        taxi = subprocess.Popen([exe, "--name", "taxi"] + common, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=self.env, text=True)
        msg = subprocess.Popen([self.b("services", "tools", "idevs-sub"), "--name", "messaging"] + common +
                               ["-C", "1", "-W", "30"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=self.env, text=True)
        try:
            time.sleep(2)
            pub = subprocess.run([self.b("services", "tools", "idevs-pub"), "--name", "store"] + common +
                                 ["-t", "sales", "-m", SALE], capture_output=True, text=True, env=self.env, timeout=30)
            out, _ = msg.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            out = "(messaging timed out)"
            pub = None
        finally:
            end_pids([taxi.pid], 5.0)
            try:
                taxi_out = taxi.communicate(timeout=5)[0]
            except subprocess.TimeoutExpired:
                end_tree(taxi)
                taxi_out = ""
            end_tree(msg)
            self.stop_broker()
        if "is booked" in out:
            self.ok(b, "c program builds and, run as taxi, answers: messaging gets the confirmation")
        else:
            self.not_ok(b, "c program runs as taxi: messaging gets the confirmation",
                        f"store: {pub.stdout + pub.stderr if pub else ''}\nmessaging: {out}\ntaxi: {taxi_out}\n"
                        "--- the broker's log:\n" + open(log, errors="replace").read()[-3000:])

    # ---- data ----
    def run_json(self, b):
        try:
            value = json.loads(b.text)
        except ValueError as e:
            return self.not_ok(b, "json block parses", str(e))
        if not (isinstance(value, dict) and "version" in value and "process" in value):
            return self.ok(b, "json block parses")

        def stand_in(v, key):
            if isinstance(v, dict):
                return {k: stand_in(x, k) for k, x in v.items()}
            if isinstance(v, list):
                return [stand_in(x, key) for x in v]
            if isinstance(v, str) and v.startswith("<") and v.endswith(">"):
                return {"uuid": str(uuid.uuid4()), "operator_ca_sha256": "0" * 64}.get(key, "x")
            return v
        path = os.path.join(self.work, f"descriptor{b.line}.json")
        with open(path, "w") as f:
            json.dump(stand_in(value, None), f)
        r = subprocess.run([self.b("tests", "docs", "docs_check"), "descriptor", path], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return self.not_ok(b, "json descriptor passes idevs_deployment_parse", r.stderr)
        self.ok(b, "json descriptor parses and passes idevs_deployment_parse")

    def run_sql(self, b):
        db = sqlite3.connect(":memory:")
        try:
            db.executescript(b.text)
        except sqlite3.Error as e:
            return self.not_ok(b, "sql block runs in SQLite", str(e))
        finally:
            db.close()
        self.ok(b, "sql block runs in SQLite")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source")
    ap.add_argument("--build")
    ap.add_argument("--cc", default="cc")
    ap.add_argument("--lib", action="append", default=[])
    ap.add_argument("--sanitize", default="none")
    ap.add_argument("--extract", nargs=2, metavar=("FILE", "NAME"))
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.extract:
        text = extract(*args.extract)
        if text is None:
            print(f"no block after a line '<!-- {args.extract[1]}' in {args.extract[0]}", file=sys.stderr)
            return 1
        sys.stdout.write(text)
        return 0
    if not args.source or not args.build:
        ap.error("--source and --build are required")
    runner = Runner(args)
    files = args.files or (["README.md"] + sorted("docs/" + f for f in os.listdir(os.path.join(args.source, "docs"))
                                                   if f.endswith(".md")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # meson's timeout: the finally blocks clean up
    for rel in files:
        runner.run_file(os.path.join(runner.src, rel), rel)
    if runner.not_run:
        print(f"# {len(runner.not_run)} block(s) marked not run:")
        for n in runner.not_run:
            print("#   " + n)
    print(f"{runner.passed} passed, {runner.failed} failed")
    return 0 if runner.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
