"""Ctrl-C (SIGINT) and SIGTERM end every subcommand the same way: its
partial report, an ``interrupted:`` line, exit 130, no traceback, and no
child process or shared-memory segment left behind.

Each test waits for proof that the run is under way (a progress line, or
the run's own shared-memory segment), never for a length of time, and is
bounded by timeouts."""

import os
import pathlib
import select
import signal
import subprocess
import sys
import time

import pytest

from concurrent_dirty.cli import fuzz as _cli_fuzz
from concurrent_dirty.cli.main import main
from tests.test_cli import _alive, _descendants
from tests.test_tokens import REGRESSIONS

ROOT = pathlib.Path(__file__).resolve().parent.parent
START_TIMEOUT = 120  # a loaded 2-core machine may take a while to start Python


def _sigint(handler):
    def set_it():
        signal.signal(signal.SIGINT, handler)
    return set_it


def _start(*argv, sigint=signal.SIG_DFL):
    """The CLI in a child whose SIGINT is ``sigint`` (default: SIG_DFL),
    whatever this test run's own disposition (a test run started as a
    background job inherits SIGINT ignored, and so would its children)."""
    return subprocess.Popen([sys.executable, "-m", "concurrent_dirty", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_sigint(sigint))


def _wait_for_line(proc, needle):
    """Read stderr until a line containing ``needle``; return what was read."""
    seen = []
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return "".join(seen)
    proc.kill()
    pytest.fail(f"no line with {needle!r} within {START_TIMEOUT}s: {''.join(seen)!r}")


def _own_segments(pid):
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"cd-{pid}-"))
    except FileNotFoundError:
        return []


def _wait_for_segment(proc):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _own_segments(proc.pid):
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the run never created its shared-memory segment")


def _finish(proc, sig, group=False):
    children = _descendants(proc.pid)
    try:
        (os.killpg if group else os.kill)(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    deadline = time.monotonic() + 10  # the resource tracker notices a moment later
    while [c for c in children if _alive(c)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [c for c in children if _alive(c)], "child processes left behind"
    assert _own_segments(proc.pid) == [], "shared-memory segments left behind"
    return proc.returncode, out, err


def _assert_interrupted(code, out, err):
    assert code == 130, (out, err)
    assert "Traceback" not in err, err
    assert "\ninterrupted: " in err, err


@pytest.mark.parametrize("scheduler, sig", [("pct", signal.SIGINT), ("random", signal.SIGTERM),
                                            ("hypothesis", signal.SIGINT)])
def test_fuzz_ends_with_its_partial_report(scheduler, sig):
    proc = _start("fuzz", "--algorithm", "xchg", "--scheduler", scheduler, "--seconds", "600",
                  "--executions", "1000000000", "--jobs", "1")
    _wait_for_line(proc, f"[xchg/{scheduler}]")
    code, out, err = _finish(proc, sig)
    _assert_interrupted(code, out, err)
    assert f"== xchg under {scheduler} (interrupted)" in out
    assert "verdict: INTERRUPTED (no failure reported in " in out
    assert "interrupted: fuzzing stopped after 1 of 1 algorithm(s) (the last one partial)" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_mutants_ends_with_its_partial_table_and_cleans_up(sig):
    # A benign look-alike is never detected, so its cell runs its whole budget.
    proc = _start("mutants", "--mutant", "xchg-no-zero-skip", "--engine", "processes",
                  "--seeds", "1", "--budget", "600", "--no-correct")
    _wait_for_segment(proc)
    code, out, err = _finish(proc, sig, group=sig == signal.SIGINT)  # Ctrl-C hits the group
    _assert_interrupted(code, out, err)
    assert out.splitlines()[0].split()[:4] == ["subject", "role", "breaks", "engine"]
    assert "verdict: INTERRUPTED (0 of 1 cells done; the table above is partial)" in out
    assert "interrupted: the zoo stopped after 0 of 1 cells" in err


def test_stress_ends_on_sigterm_like_ctrl_c():
    proc = _start("stress", "--engine", "processes", "--algorithm", "xchg", "--seconds", "600")
    _wait_for_line(proc, "[xchg/processes]")
    code, out, err = _finish(proc, signal.SIGTERM)
    _assert_interrupted(code, out, err)
    assert "interrupted: every job's writers stopped, shared memory unlinked" in err
    assert "verdict: INTERRUPTED" in out or "interrupted" in out


def test_replay_interrupted_says_so_and_exits_130(capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli_fuzz, "replay", interrupt)
    _, _, token = REGRESSIONS[0]
    code = main(["replay", token])
    out, err = capsys.readouterr()
    assert code == 130
    assert out == ("verdict: INTERRUPTED (the replay against "
                   "tests.broken_algorithms:NonatomicClearXchg did not finish; nothing to "
                   "report)\n")
    assert err == "\ninterrupted: replay stopped\n"


def test_sigterm_handler_is_restored_after_main(capsys):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    main(["replay", "garbage"])
    capsys.readouterr()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_deferred_interrupts_hold_a_signal_until_the_block_ends():
    from concurrent_dirty.harness.interrupt import deferred_interrupts, signals_interrupt

    steps = []
    with signals_interrupt(), pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # let the handler run: it must not raise here
                steps.append(1)
            steps.append("done")
    assert steps[-1] == "done"


def test_an_interrupt_swallowed_by_a_gc_callback_is_delivered_again(capsys):
    # The handler runs wherever the main thread is: inside a gc callback
    # (Hypothesis has one) the interpreter swallows its KeyboardInterrupt
    # ("Exception ignored in ...") and a fuzz run went on for its whole
    # budget; it must arrive once the callback returns, with no traceback.
    import gc

    from concurrent_dirty.harness.interrupt import signals_interrupt

    fired, waited = [], []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(1)
            signal.raise_signal(signal.SIGINT)  # its handler raises here, in the callback

    with pytest.raises(KeyboardInterrupt), signals_interrupt():
        gc.callbacks.append(callback)
        try:
            gc.collect()
            for _ in range(1000):  # the interrupt lands here (a bound, not a timing)
                waited.append(1)
                time.sleep(0.01)
        finally:
            gc.callbacks.remove(callback)
    assert fired and len(waited) < 1000
    assert "Exception ignored" not in capsys.readouterr().err


def test_an_inherited_ignored_sigint_is_honoured():
    # As a shell shields a background job (``cmd &``): Ctrl-C is not for it.
    # The run goes on to its end (exit 0, not 130); SIGTERM would still work.
    proc = _start("fuzz", "--algorithm", "xchg", "--scheduler", "random", "--seconds", "3",
                  "--executions", "1000000000", "--jobs", "1", sigint=signal.SIG_IGN)
    _wait_for_line(proc, "[xchg/random]")
    code, out, err = _finish(proc, signal.SIGINT)
    assert code == 0, (out, err)
    assert "interrupted" not in err and "verdict: PASS" in out
