#!/usr/bin/env python3
"""Side by side with the Python peers: the same two bugs for
interleave-test 0.1.0 and frontrun 0.7.0, and concurrent-dirty's default
``fuzz``, in one interleaved run.

    python3 tools/bench_peers.py --venv-dir PATH [--seeds 5] [--python PY] [--tree PATH]

The bugs, written for each peer as a user of that tool would write them
(from its README: interleave-test's ``it.explore(model, seed=...,
strategy="pct")`` with ``it.spawn`` and ``it.Lock``, pct being what its
README recommends for rare orderings; frontrun's ``frontrun.explore(setup=...,
workers=[...], invariant=...)`` with its defaults, DPOR, under its CLI
``frontrun python``, which its ``explore`` requires):

* ``nonatomic-clear``: two vCPUs set a bit each with an atomic set_bit (a
  lock around ``word |= bit``) while the harvester clears the word with a
  load and then a store instead of one exchange; a final harvest after
  both; every set bit must have been collected;
* ``bit-before-data``: a vCPU marks its page dirty, then writes the data;
  the harvester exchanges the dirty word with 0 and copies the pages whose
  bits it took; after a final harvest the copy must equal memory.

concurrent-dirty runs ``python -m concurrent_dirty fuzz --algorithm
nonatomic-clear`` / ``--algorithm bit-before-data``, no other option (its
model of the bugs is the KVM one: only the writes outside ``mmu_lock``
race, every other step of the VM runs too). The peers' models are simpler:
every write races there. A row ``concurrent-dirty --jobs 1`` shows what the
default's start-up of one job per core costs (not compared: not the
default).

Each run is a fresh process; ``wall`` is its whole life (interpreter,
imports, search, report), ``cpu`` the CPU time (user and system) of it
and the processes it waited for, from the kernel's accounting of finished
children (what ``/usr/bin/time`` prints: less moved by other processes'
load than the wall time), ``search`` the tool's own time to the verdict
(the peers': around their ``explore`` call; concurrent-dirty's: the
seconds its verdict line prints). Runs are interleaved (seed by seed, every
tool and bug in turn, the order rotating) so that the machine's load falls
on all alike. Medians over ``--seeds``; the ratios are concurrent-dirty's
median over the peer's (above 1: concurrent-dirty is slower). The verdict
is on the wall time, as issue 18 states it.

Each tool gets its own virtual environment under ``--venv-dir``, and
nothing is installed anywhere else. A peer's is created and installed
there on the first run and reused after. Both peers need Python >= 3.12
(frontrun 0.7.0 ships wheels for 3.13): ``--python`` names the
interpreter for their venvs (default: the first of ``python3.13`` on PATH
and pyenv's 3.13.*).

concurrent-dirty is installed the same way, as a user installs it: a
venv (``concurrent-dirty-this``; ``concurrent-dirty-tree`` for
``--tree``) made with the interpreter that runs this tool, into which
``pip install`` puts a copy of the checkout's files (the package,
``pyproject.toml``, ``README.md`` and the pytest plugin, copied under
``--venv-dir``, so the build writes nothing into the checkout), not
editable, its dependencies from PyPI, its bytecode compiled by pip as the
peers' is. The venv is made once and reused; the package is reinstalled
whenever the checkout's files differ from the installed ones (a SHA-256
of every file copied, kept in the venv's ``tree-key``: a new commit or an
uncommitted edit both count). Every tool then runs with ``PYTHONPATH``
and ``PYTHONPYCACHEPREFIX`` taken out of its environment, so that each
imports what its own venv holds, with the bytecode pip wrote there.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PEERS = {"interleave-test": "0.1.0", "frontrun": "0.7.0"}
BUGS = ("nonatomic-clear", "bit-before-data")
#: A run that takes longer is reported as not found.
RUN_TIMEOUT = 300.0

INTERLEAVE_TEST = r'''
import json, sys, time
import interleave_test as it

BUG, SEED = sys.argv[1], int(sys.argv[2])


class Bitmap:
    """One dirty-bitmap word: set_bit is atomic, the clear is not."""

    def __init__(self):
        self.word = 0
        self.collected = 0
        self.lock = it.Lock()

    def set_bit(self, nr):
        with self.lock:  # set_bit_le: one atomic read-modify-write
            self.word |= 1 << nr

    def get_and_clear(self):
        old = self.word  # BUG: a load ...
        self.word = 0    # ... then a store, not one xchg
        self.collected |= old


class Vm:
    """Two pages, their dirty bits, and the migration's copy."""

    def __init__(self):
        self.mem = [0, 0]
        self.dest = [0, 0]
        self.dirty = 0
        self.lock = it.Lock()

    def write(self, page, value):
        with self.lock:
            self.dirty |= 1 << page  # BUG: the bit before the data
        self.mem[page] = value

    def harvest(self):
        with self.lock:  # xchg(dirty, 0)
            bits, self.dirty = self.dirty, 0
        for page in range(2):
            if bits >> page & 1:
                self.dest[page] = self.mem[page]


def nonatomic_clear():
    log = Bitmap()
    vcpus = [it.spawn(log.set_bit, nr) for nr in (0, 1)]
    harvester = it.spawn(log.get_and_clear)
    for t in (*vcpus, harvester):
        t.join()
    log.get_and_clear()  # the final round, after the writers
    assert log.collected == 0b11, f"bits lost: collected {log.collected:#b}"


def bit_before_data():
    vm = Vm()
    vcpu = it.spawn(vm.write, 0, 1)
    harvester = it.spawn(vm.harvest)
    vcpu.join()
    harvester.join()
    vm.harvest()  # the final round
    assert vm.dest == vm.mem, f"copy {vm.dest} != memory {vm.mem}"


model = {"nonatomic-clear": nonatomic_clear, "bit-before-data": bit_before_data}[BUG]
start = time.perf_counter()
found = False
try:
    # pct: the strategy its README gives for rare orderings (its default,
    # uniform random, did not find bit-before-data in 200 schedules here)
    it.explore(model, iterations=10_000, seed=SEED, strategy="pct")
except it.RaceFound as err:
    found = True
search = time.perf_counter() - start
print(json.dumps({"found": found, "search": search}))
'''

FRONTRUN = r'''
import json, sys, threading, time
import frontrun

BUG, SEED = sys.argv[1], int(sys.argv[2])


class Bitmap:
    def __init__(self):
        self.word = 0
        self.collected = 0
        self.lock = threading.Lock()

    def set_bit(self, nr):
        with self.lock:  # set_bit_le: one atomic read-modify-write
            self.word |= 1 << nr

    def get_and_clear(self):
        old = self.word  # BUG: a load ...
        self.word = 0    # ... then a store, not one xchg
        self.collected |= old


class Vm:
    def __init__(self):
        self.mem = [0, 0]
        self.dest = [0, 0]
        self.dirty = 0
        self.lock = threading.Lock()

    def write(self, page, value):
        with self.lock:
            self.dirty |= 1 << page  # BUG: the bit before the data
        self.mem[page] = value

    def harvest(self):
        with self.lock:  # xchg(dirty, 0)
            bits, self.dirty = self.dirty, 0
        for page in range(2):
            if bits >> page & 1:
                self.dest[page] = self.mem[page]


def all_collected(log):
    # the final round, after the writers: what is still in the word
    return (log.collected | log.word) == 0b11


def copy_complete(vm):
    final = list(vm.dest)  # the final round: copy what is still dirty
    for page in range(2):
        if vm.dirty >> page & 1:
            final[page] = vm.mem[page]
    return final == vm.mem


if BUG == "nonatomic-clear":
    kw = dict(setup=Bitmap,
              workers=[lambda b: b.set_bit(0), lambda b: b.set_bit(1), Bitmap.get_and_clear],
              invariant=all_collected)
else:
    kw = dict(setup=Vm, workers=[lambda vm: vm.write(0, 1), Vm.harvest],
              invariant=copy_complete)
start = time.perf_counter()
result = frontrun.explore(**kw)  # DPOR, its default: deterministic, so no seed
search = time.perf_counter() - start
print(json.dumps({"found": not result.property_holds, "search": search}))
'''

SCRIPTS = {"interleave-test": INTERLEAVE_TEST, "frontrun": FRONTRUN}
ONE_JOB = "concurrent-dirty --jobs 1"
_SECONDS = re.compile(r"^verdict: .* in ([0-9.]+)s", re.M)


def is_313(python: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 13))"],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == "True"


def default_python() -> str | None:
    """pyenv's 3.13.* (newest first), else ``python3.13`` on PATH, if it runs."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13.*/bin/python3")),
                        reverse=True)
    on_path = shutil.which("python3.13")
    for python in candidates + ([on_path] if on_path else []):
        if is_313(python):
            return python
    return None


def venv_python(venv_dir: str, peer: str) -> str:
    return os.path.join(venv_dir, f"{peer}-{PEERS[peer]}", "bin", "python")


def ensure_venv(venv_dir: str, peer: str, python: str) -> str:
    """The peer's venv under ``venv_dir``, created and installed if it is
    not there yet; returns its interpreter."""
    py = venv_python(venv_dir, peer)
    version = PEERS[peer]
    module = peer.replace("-", "_")
    if os.path.exists(py):
        check = subprocess.run([py, "-c", f"import importlib.metadata as m; "
                                f"print(m.version({peer!r}))"], capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == version:
            return py
    env_dir = os.path.dirname(os.path.dirname(py))
    print(f"bench_peers: creating {env_dir} ({peer}=={version})", file=sys.stderr, flush=True)
    try:
        for cmd in ([python, "-m", "venv", "--clear", env_dir],
                    [py, "-m", "pip", "install", "--quiet", f"{peer}=={version}"],
                    [py, "-c", f"import {module}"]):
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise SetupError(f"{' '.join(cmd)} failed (exit {out.returncode}): "
                                 f"{(out.stderr.strip().splitlines() or [''])[-1]}")
    except BaseException:
        shutil.rmtree(env_dir, ignore_errors=True)  # nothing half-made is left
        raise
    return py


class SetupError(Exception):
    """A peer's environment could not be made."""


def run_peer(peer: str, py: str, script: str, bug: str, seed: int) -> dict[str, float | bool]:
    # frontrun's explore() runs only under its CLI (``frontrun python ...``,
    # as its README runs ``frontrun pytest``), which sets up its lock
    # patching and I/O interception.
    cmd = [py, script, bug, str(seed)]
    if peer == "frontrun":
        cmd = [os.path.join(os.path.dirname(py), "frontrun"), *cmd]
    out, wall, cpu = timed(cmd)
    if out is None:
        return {"found": False, "wall": wall, "cpu": cpu, "search": float("nan")}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"bench_peers: {script} {bug} {seed} failed (exit {out.returncode}):"
                         f"\n{out.stderr[-2000:]}")
    data = json.loads(lines[-1])
    return {"found": bool(data["found"]), "wall": wall, "cpu": cpu,
            "search": float(data["search"])}


def run_dir(program: str) -> str:
    """Where a tool runs: its venv's ``bin``, not the caller's directory
    (``python -m concurrent_dirty`` from a checkout would import the
    checkout's package, not the venv's)."""
    return os.path.dirname(os.path.abspath(program))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str] | None, float, float]:
    """Run ``cmd`` (the environment of :func:`clean_env`): its result (None
    if it timed out), its wall time, and its CPU time, user and system,
    with every process it waited for (the kernel's accounting of finished
    children: what ``/usr/bin/time`` prints). The runs are one at a time,
    so the difference is this one's. On a machine others load, the CPU
    time moves less than the wall time."""
    cpu0, start = _children_cpu(), time.perf_counter()
    try:
        out: subprocess.CompletedProcess[str] | None = subprocess.run(
            cmd, capture_output=True, text=True, env=clean_env(), cwd=run_dir(cmd[0]),
            timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        out = None
    return out, time.perf_counter() - start, _children_cpu() - cpu0


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What ``pip install`` needs of a checkout, besides the package itself.
TREE_FILES = ("pyproject.toml", "README.md", "_concurrent_dirty_pytestplugin.py")
TREE_PACKAGE = "concurrent_dirty"


def clean_env() -> dict[str, str]:
    """The environment every timed run gets: the caller's, without what
    would make a tool import or look for bytecode elsewhere than in its own
    venv (``PYTHONPATH``, ``PYTHONPYCACHEPREFIX``, ``PYTHONHOME``)."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONPYCACHEPREFIX", "PYTHONHOME"):
        env.pop(name, None)
    return env


def tree_files(tree: str) -> list[str]:
    """The checkout's files a ``pip install`` of it reads (sorted, relative):
    :data:`TREE_FILES` and the package's files, without bytecode."""
    files = [name for name in TREE_FILES if os.path.isfile(os.path.join(tree, name))]
    for top, dirs, names in os.walk(os.path.join(tree, TREE_PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [os.path.relpath(os.path.join(top, n), tree) for n in sorted(names)
                  if not n.endswith((".pyc", ".pyo"))]
    return sorted(files)


def tree_key(tree: str) -> str:
    """A SHA-256 of the checkout's installable files (their paths and
    bytes): it changes with a new commit and with an uncommitted edit."""
    digest = hashlib.sha256()
    for rel in tree_files(tree):
        with open(os.path.join(tree, rel), "rb") as f:
            digest.update(rel.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


def _run_setup(cmd: list[str], env: dict[str, str] | None = None,
               cwd: str | None = None) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if out.returncode != 0:
        raise SetupError(f"{' '.join(cmd)} failed (exit {out.returncode}): "
                         f"{(out.stderr.strip().splitlines() or [''])[-1]}")


def ensure_ours(venv_dir: str, name: str, tree: str) -> str:
    """concurrent-dirty's venv ``concurrent-dirty-<name>`` under ``venv_dir``
    with ``tree`` installed in it (not editable; made with this tool's
    interpreter on the first run, the package reinstalled when the tree's
    files changed); returns its interpreter."""
    env_dir = os.path.join(venv_dir, f"concurrent-dirty-{name}")
    py = os.path.join(env_dir, "bin", "python")
    key_file = os.path.join(env_dir, "tree-key")
    key = tree_key(tree)
    try:
        with open(key_file) as f:
            if f.read().strip() == key and os.path.exists(py):
                return py
    except OSError:
        pass
    fresh = not os.path.exists(py)
    print(f"bench_peers: installing {tree} into {env_dir}", file=sys.stderr, flush=True)
    # pip compiles what it installs unless told not to: let it, as for the peers.
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    copy = tempfile.mkdtemp(prefix="tree-", dir=venv_dir)
    try:
        if os.path.exists(key_file):
            os.remove(key_file)
        for rel in tree_files(tree):
            os.makedirs(os.path.dirname(os.path.join(copy, rel)), exist_ok=True)
            shutil.copy2(os.path.join(tree, rel), os.path.join(copy, rel))
        if fresh:
            _run_setup([sys.executable, "-m", "venv", "--clear", env_dir], env)
        else:
            _run_setup([py, "-m", "pip", "uninstall", "--quiet", "--yes", "concurrent-dirty"],
                       env)
        _run_setup([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    copy], env)
        _run_setup([py, "-c", "import concurrent_dirty, sys; "
                    "assert concurrent_dirty.__file__.startswith(sys.prefix), "
                    "concurrent_dirty.__file__"], clean_env(), cwd=run_dir(py))
        with open(key_file, "w") as f:
            f.write(key + "\n")
    except BaseException:
        if fresh:  # nothing half-made is left
            shutil.rmtree(env_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return py


def warm_ours(py: str) -> None:
    """One untimed run per bug, so that the first timed one does not pay
    for reading the venv's files from disk."""
    for bug in BUGS:
        subprocess.run([py, "-m", "concurrent_dirty", "fuzz", "--algorithm", bug],
                       env=clean_env(), cwd=run_dir(py), capture_output=True,
                       timeout=RUN_TIMEOUT)


def run_ours(bug: str, *extra: str, py: str) -> dict[str, float | bool]:
    out, wall, cpu = timed([py, "-m", "concurrent_dirty", "fuzz", "--algorithm", bug, *extra])
    m = _SECONDS.search(out.stdout) if out is not None else None
    return {"found": out is not None and out.returncode == 1 and "FAIL" in out.stdout,
            "wall": wall, "cpu": cpu, "search": float(m.group(1)) if m else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--venv-dir", required=True,
                    help="where each tool's virtual environment lives (created if missing; "
                         "nothing is written anywhere else)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tree", default=None,
                    help="another checkout of concurrent-dirty, run in the same interleaved "
                         "run (rows 'tree' and 'tree --jobs 1'; not in the verdict): before "
                         "and after a change, measured alike")
    ap.add_argument("--python", default=None,
                    help="interpreter (>= 3.13) for the peers' venvs (default: python3.13 "
                         "on PATH, else pyenv's 3.13.*)")
    args = ap.parse_args()
    if args.seeds < 1:
        print(f"bench_peers: expected --seeds >= 1, got {args.seeds}", file=sys.stderr)
        return 2
    python = args.python or default_python()
    if python is None or not is_313(python):
        print("bench_peers: expected a Python 3.13 interpreter (--python PATH); found none",
              file=sys.stderr)
        return 2
    if args.tree and not os.path.isfile(os.path.join(args.tree, "pyproject.toml")):
        print(f"bench_peers: --tree {args.tree}: not a checkout of concurrent-dirty "
              f"(no pyproject.toml)", file=sys.stderr)
        return 2
    venv_dir = os.path.abspath(args.venv_dir)
    os.makedirs(venv_dir, exist_ok=True)
    try:
        pys = {peer: ensure_venv(venv_dir, peer, python) for peer in PEERS}
    except SetupError as exc:
        print(f"bench_peers: {exc}", file=sys.stderr)
        return 2
    scripts = {}
    # Not inside a venv: interleave-test does not trace code under a
    # site-packages or stdlib directory.
    work = tempfile.mkdtemp(prefix="bench_peers-")
    for peer, text in SCRIPTS.items():
        path = os.path.join(work, f"bench_{peer.replace('-', '_')}.py")
        with open(path, "w") as f:
            f.write(text)
        scripts[peer] = path
    try:
        ours = {"": ensure_ours(venv_dir, "this", HERE)}
        if args.tree:
            ours["tree"] = ensure_ours(venv_dir, "tree", os.path.abspath(args.tree))
        for py in ours.values():
            warm_ours(py)
        return measure(args.seeds, pys, scripts, ours)
    except SetupError as exc:
        print(f"bench_peers: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(seeds: int, pys: dict[str, str], scripts: dict[str, str],
            ours: dict[str, str]) -> int:
    # The default (jobs = cores) and, to show what its start-up costs, one
    # job (not the default: not what the verdict compares).
    tools = ["concurrent-dirty", ONE_JOB, *PEERS]
    if "tree" in ours:  # the other checkout, alike
        tools[2:2] = ["tree", "tree --jobs 1"]
    py = ours[""]
    runs: dict[tuple[str, str], list[dict[str, float | bool]]] = {}
    for seed in range(seeds):
        order = [(t, b) for t in tools for b in BUGS]
        k = seed % len(order)
        for tool, bug in order[k:] + order[:k]:
            r = run_ours(bug, py=py) if tool == "concurrent-dirty" \
                else run_ours(bug, "--jobs", "1", py=py) if tool == ONE_JOB \
                else run_ours(bug, py=ours["tree"]) if tool == "tree" \
                else run_ours(bug, "--jobs", "1", py=ours["tree"]) if tool == "tree --jobs 1" \
                else run_peer(tool, pys[tool], scripts[tool], bug, seed)
            runs.setdefault((tool, bug), []).append(r)
            print(f"seed {seed} {tool:<25} {bug:<16} found {r['found']!s:<5} "
                  f"wall {r['wall']:.2f}s cpu {r['cpu']:.2f}s search {r['search']:.2f}s",
                  file=sys.stderr, flush=True)

    def median(tool: str, bug: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[(tool, bug)])

    print(f"{'bug':<16} {'tool':<25} {'found':>5} {'wall s':>8} {'cpu s':>6} {'search s':>9} "
          f"{'ours/this wall':>15} {'cpu':>6} {'search':>7}")
    ok = True
    for bug in BUGS:
        ours_wall, ours_cpu, ours_search = (median("concurrent-dirty", bug, key)
                                            for key in ("wall", "cpu", "search"))
        best = min(median(p, bug, "wall") for p in PEERS)
        for tool in tools:
            found = sum(bool(r["found"]) for r in runs[(tool, bug)])
            w, c, s = (median(tool, bug, key) for key in ("wall", "cpu", "search"))
            ratios = ("" if tool.startswith(("concurrent-dirty", "tree"))
                      else f"{ours_wall / w:>14.2f}x {ours_cpu / c:>5.2f}x "
                           f"{ours_search / s:>6.2f}x")
            print(f"{bug:<16} {tool:<25} {found}/{seeds:<3} {w:>8.2f} {c:>6.2f} {s:>9.2f} "
                  f"{ratios}")
        ok = ok and ours_wall <= best
        print(f"{bug:<16} default fuzz's median wall {ours_wall:.2f}s against the best peer's "
              f"{best:.2f}s: {'met' if ours_wall <= best else 'NOT met'}")
    print(f"(medians of {seeds} interleaved runs per tool and bug; every run a fresh "
          f"process)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
