"""Output files (``--json``, ``--token-file``): atomic for regular files,
plain for devices and FIFOs, a one-line usage error for anything else,
checked before any run starts, and never a stray temporary file."""

import json
import os
import stat
import threading

import pytest

from concurrent_dirty.cli.main import main
from concurrent_dirty.harness import output as _output
from concurrent_dirty.harness.output import OutputError, check_output_path, write_text

STRESS = ["stress", "--algorithm", "xchg", "--engine", "threads", "--executions", "2",
          "--quiet"]
FUZZ = ["fuzz", "--algorithm", "xchg", "--executions", "3", "--quiet"]
MUTANTS = ["mutants", "--mutant", "nonatomic-clear", "--engine", "random", "--seeds", "1",
           "--budget", "0.1", "--no-correct", "--quiet"]


def _char_device(path, minor):
    """A private copy of /dev/null (minor 3) or /dev/full (minor 7)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    return path


def _reader(path, sink):
    def read():
        with open(path, "rb") as f:
            sink.append(f.read())
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("argv, option", [(STRESS, "--json"), (FUZZ, "--json")])
def test_a_fifo_is_written_plainly_never_replaced(capsys, tmp_path, argv, option):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = _reader(fifo, got)
    code = main([*argv, option, str(fifo)])
    reader.join(timeout=60)
    capsys.readouterr()
    assert code == 0
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and got[0].endswith(b"\n")
    assert json.loads(got[0])["verdict"] == "pass"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


@pytest.mark.parametrize("argv, option", [(STRESS, "--json"), (FUZZ, "--token-file")])
def test_a_character_device_stays_a_character_device(capsys, tmp_path, argv, option):
    # (a FIFO suits a single report; the token file is rewritten every execution)
    null = _char_device(tmp_path / "null", 3)
    code = main([*argv, option, str(null)])
    capsys.readouterr()
    assert code == 0
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_device_that_fails_the_write_is_a_one_line_error(capsys, tmp_path):
    full = _char_device(tmp_path / "full", 7)
    code = main([*STRESS, "--json", str(full)])
    out, err = capsys.readouterr()
    assert code == 2
    assert "verdict: PASS" in out  # the run happened; only the report could not be saved
    assert err == f"concurrent-dirty: error: could not write {str(full)!r}: No space left on " \
                  f"device\n"
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def _proc_version_message(option):
    if os.geteuid() == 0:  # root may open it for append, but /proc takes no new file
        return (f"expected {option} in a writable directory, got '/proc/version' (cannot "
                f"create a file in /proc: No such file or directory)")
    return f"expected {option} to name a writable file, got '/proc/version' (Permission denied)"


@pytest.mark.parametrize("argv, option", [(STRESS, "--json"), (FUZZ, "--json"),
                                          (FUZZ, "--token-file"), (MUTANTS, "--json")])
@pytest.mark.parametrize("case", ["directory", "missing parent", "/proc/version"])
def test_an_unwritable_path_is_exit_2_before_the_run(capsys, tmp_path, argv, option, case):
    if case == "directory":
        path = str(tmp_path)
        message = f"expected {option} to name a file, got the directory {path!r}"
    elif case == "missing parent":
        path = str(tmp_path / "missing" / "out.json")
        message = (f"expected {option} in an existing directory, got {path!r} "
                   f"({tmp_path / 'missing'} does not exist)")
    else:
        if not os.path.exists("/proc/version"):
            pytest.skip("no /proc/version")
        path = "/proc/version"
        message = _proc_version_message(option)
    before = os.stat("/proc/version") if case == "/proc/version" else None
    code = main([*argv, option, path])
    out, err = capsys.readouterr()
    assert code == 2
    assert err == f"concurrent-dirty: error: {message}\n"
    assert out == ""  # nothing ran
    assert list(tmp_path.iterdir()) == []  # nothing written
    if before is not None:
        assert stat.S_ISREG(os.stat("/proc/version").st_mode)


def test_a_dangling_symlink_is_a_usage_error(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "nowhere" / "x.json")
    with pytest.raises(Exception, match=(
            rf"^expected --json to name a file, got '{link}' \(a symlink to "
            rf"{tmp_path}/nowhere/x\.json, which does not exist\)$")):
        check_output_path(str(link), "--json")


def test_a_successful_fuzz_run_leaves_only_its_two_files(capsys, tmp_path):
    report, token = tmp_path / "fuzz.json", tmp_path / "token.txt"
    code = main([*FUZZ, "--json", str(report), "--token-file", str(token)])
    capsys.readouterr()
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.json", "token.txt"]
    # The last execution's pending token: one that replay accepts.
    assert token.read_text().startswith("cd2.")
    assert main(["replay", token.read_text().strip()]) == 0


def test_a_regular_file_is_replaced_atomically_keeping_its_mode(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    write_text(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_symlink_to_a_file_keeps_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_text(str(link), "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_a_failed_replace_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text("old\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_output.os, "replace", refuse)
    with pytest.raises(OutputError, match=rf"^could not write '{path}': No space left on "
                                          rf"device$"):
        write_text(str(path), "new\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert path.read_text() == "old\n"
