"""Start-up stays light: ``import concurrent_dirty`` and the CLI's ``--help``
must not import Hypothesis (nor the atomic words' cffi bindings), which only
the commands that use them load. Checked in a fresh interpreter through
``sys.modules``: deterministic, no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = """
import contextlib, io, json, sys
import concurrent_dirty
from concurrent_dirty.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(*argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_and_help_do_not_import_hypothesis_or_cffi():
    loaded = _modules_after("--help")
    assert "concurrent_dirty.cli.main" in loaded  # the probe really ran the CLI
    heavy = {m for m in loaded if m.split(".")[0] in ("hypothesis", "cffi", "atomics")}
    assert not heavy, f"--help imported {sorted(heavy)}"
    subcommands = {m for m in loaded
                   if m.startswith("concurrent_dirty.cli.") and m != "concurrent_dirty.cli.main"}
    assert not subcommands, f"--help imported subcommand modules {sorted(subcommands)}"


def test_import_resolves_names_lazily():
    loaded = _modules_after()
    assert "hypothesis" not in loaded
    assert "concurrent_dirty.engines.free" not in loaded


def test_subcommand_help_loads_only_its_module():
    loaded = _modules_after("perf", "--help")
    assert "concurrent_dirty.cli.perf" in loaded
    assert "concurrent_dirty.cli.zoo" not in loaded
    assert "hypothesis" not in loaded


def test_fuzz_with_one_job_imports_only_what_its_search_needs():
    # The default search on a mutant, to its failure and report: no
    # Hypothesis, no cffi parser (atomics' package __init__ builds one), no
    # kernel layer, free-running engines or zoo, and no job-process
    # machinery (one job runs in this process).
    loaded = _modules_after("fuzz", "--algorithm", "bit-before-data", "--jobs", "1", "--quiet",
                            "--seconds", "10")
    assert "concurrent_dirty.search.runner" in loaded  # the probe really searched
    assert "concurrent_dirty.model.atomic" in loaded
    unneeded = {m for m in loaded if m.split(".")[0] in (
        "hypothesis", "atomics", "cffi", "pycparser", "numpy", "matplotlib", "subprocess",
        "pickle")}
    unneeded |= {m for m in loaded if m.startswith((
        "concurrent_dirty.kvm", "concurrent_dirty.engines.free",
        "concurrent_dirty.engines.workers", "concurrent_dirty.search.zoo"))}
    assert not unneeded, f"fuzz --jobs 1 imported {sorted(unneeded)}"


# Without site (-S) and its .pth files (an editable install's finder, a
# certifi hook), which import pathlib, tempfile and more on some machines
# before any code of ours: what is left is what this package's path imports.
_PROBE_NO_SITE = """
import site, sys
sys.path.extend(site.getsitepackages())
before = set(sys.modules)
import contextlib, io, json
from concurrent_dirty.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_default_fuzz_imports_no_tempfile_or_hashlib():
    # The default command (one job per core): the output file's helpers
    # import tempfile only when a file is written, and the jobs' stream
    # seeds hash with blake2b without hashlib's OpenSSL bindings. (shutil
    # is argparse's: every add_argument builds a HelpFormatter, which asks
    # shutil for the terminal's width.)
    out = subprocess.run([sys.executable, "-S", "-c", _PROBE_NO_SITE, "fuzz", "--algorithm",
                          "bit-before-data", "--quiet", "--seconds", "10"], cwd=ROOT,
                         check=True, capture_output=True, text=True, timeout=60).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert "concurrent_dirty.search.runner" in loaded  # the probe really searched
    unneeded = loaded & {"tempfile", "hashlib", "_hashlib"}
    assert not unneeded, f"the default fuzz imported {sorted(unneeded)}"


_GUARD = """
import signal, sys
sys.argv[0] = sys.argv[1]
import concurrent_dirty
before = signal.getsignal(signal.SIGINT)
print(getattr(before, "__name__", before))
from concurrent_dirty.cli.main import main
try:
    main(["fuzz", "--no-such-option"])
except SystemExit:
    pass
after = signal.getsignal(signal.SIGINT)
print(getattr(after, "__name__", after))
"""


def _guard(script: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", _GUARD, script], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=60).stdout.split()


def test_the_installed_script_is_guarded_while_it_starts():
    # The console script (bin/concurrent-dirty) imports cli.main before
    # main() runs: a Ctrl-C then is the interrupt line, exit 130, not a
    # traceback; main() hands Ctrl-C back to KeyboardInterrupt.
    assert _guard("/usr/local/bin/concurrent-dirty") == ["_startup_interrupt",
                                                        "default_int_handler"]
    # Any other program importing the package keeps its own handler.
    assert _guard("/usr/local/bin/some-other-tool") == ["default_int_handler",
                                                       "default_int_handler"]


# -- the exit code after a caught Ctrl-C ---------------------------------------------

_CAUGHT_IN_EXEC = """
import os, signal, sys
sys.path.insert(0, {root!r})
from concurrent_dirty.harness.interrupt import exit_process
try:  # Ctrl-C while a string is exec'd (as a dataclass is built during an import)
    exec("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(9): pass")
except KeyboardInterrupt:
    sys.stderr.write("interrupted: caught\\n")
{end}(130)
"""


def _exit_code(tmp_path, end: str) -> int:
    # Run as a module (python -m), as the CLI is: the interpreter's exit
    # path differs from -c's.
    (tmp_path / "caught.py").write_text(_CAUGHT_IN_EXEC.format(root=ROOT, end=end))
    done = subprocess.run([sys.executable, "-m", "caught"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert "interrupted: caught" in done.stderr, done.stderr
    return done.returncode


def test_a_ctrl_c_caught_inside_an_exec_still_exits_130(tmp_path):
    # The CLI ends through exit_process (python -m and the installed script):
    # 130, where the interpreter's own exit dies by SIGINT (the control below).
    assert _exit_code(tmp_path, "exit_process") == 130


def test_the_interpreters_own_exit_dies_by_sigint_after_it(tmp_path):
    # Why exit_process exists (CPython 3.11-3.13): the test above can fail.
    assert _exit_code(tmp_path, "sys.exit") == -2


_ENDS = """
import sys, threading, time
sys.path.insert(0, {root!r})
import atexit
from concurrent_dirty.harness.interrupt import exit_process


class Finalized:
    def __del__(self):
        sys.stderr.write("finalized\\n")


kept = Finalized()  # a module's object: torn down by the interpreter's own exit
atexit.register(lambda: sys.stderr.write("exit handlers ran\\n"))
if {worker}:  # a thread that is not a daemon, still at work
    threading.Thread(target=time.sleep, args=(0.3,)).start()
sys.stdout.write("the report, unflushed")
exit_process(1)
"""


@pytest.mark.parametrize("worker", [False, True])
def test_the_cli_ends_without_the_interpreters_finalization(tmp_path, worker):
    # exit_process: the exit handlers (the segments' unlink), the streams
    # flushed, the code, and no teardown of every module and object (about
    # 25 ms of CPU after a report); unless a thread that is not a daemon
    # still runs: the interpreter's exit waits for it, as usual.
    (tmp_path / "ends.py").write_text(_ENDS.format(root=ROOT, worker=worker))
    done = subprocess.run([sys.executable, "-m", "ends"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == "the report, unflushed"
    assert "exit handlers ran" in done.stderr
    assert ("finalized" in done.stderr) == worker, done.stderr
