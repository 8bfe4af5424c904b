"""--jobs, --shard and --db (issue 10): the deterministic split, jobs in
processes with their reports merged, the first failure stopping the other
jobs, Ctrl-C, and the failure store (a directory and a real Redis)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from concurrent_dirty.cli.main import main
from concurrent_dirty.harness.scenario import Scenario
from concurrent_dirty.search.pool import Shard, pick, share, stream_seed
from concurrent_dirty.search.scale import STOPPED, fuzz_streams, split_cells

BROKEN = "tests.broken_algorithms:NonatomicClearXchg"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage(capsys, *argv):
    """A usage error, raised by the parser or returned by main: (code, err)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


def cli(*argv, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "concurrent_dirty", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- the split --------------------------------------------------------------

def test_shares_add_up_and_picks_partition():
    for total in (0, 1, 7, 10_000):
        for parts in (1, 2, 3, 8):
            assert sum(share(total, parts, i) for i in range(parts)) == total
            items = list(range(total % 50))
            dealt = [pick(items, parts, i) for i in range(parts)]
            assert sorted(x for d in dealt for x in d) == items


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "x", "1-2", "/", "2/1", "-1/2"])
def test_bad_shard_specs_are_one_line_usage_errors(capsys, text):
    code, err = usage(capsys, "fuzz", f"--shard={text}", "--executions", "1")
    assert code == 2
    assert err.count("\n") == 1
    assert f"expected a shard K/N with 1 <= K <= N <= 1000000, got {text!r}" in err


@pytest.mark.parametrize("command", ["fuzz", "stress", "mutants"])
def test_bad_jobs_are_one_line_usage_errors(capsys, command):
    code, err = usage(capsys, command, "--jobs", "0")
    assert code == 2 and err.count("\n") == 1
    assert "expected a number of jobs from 1 to 1024, got '0'" in err


def test_the_single_stream_is_todays_campaign():
    assert stream_seed(42, Shard(), 1, 0) == 42
    (streams,) = fuzz_streams(["xchg"], scheduler="random", executions=100, seed=42,
                              shard=Shard(), jobs=1)
    (s,) = streams
    assert (s.seed, s.executions, s.first, s.stride) == (42, 100, 1, 1)


def test_shards_and_jobs_cover_every_program_once_with_distinct_seeds():
    executions, shards, jobs = 1001, 3, 2
    programs, seeds = [], set()
    for k in range(shards):
        plan = fuzz_streams(["xchg"], scheduler="random", executions=executions, seed=7,
                            shard=Shard(k, shards), jobs=jobs)
        for (s,) in plan:
            programs += [s.first + s.stride * i for i in range(s.executions)]
            seeds.add(s.seed)
    assert sorted(programs) == list(range(1, executions + 1))
    assert len(seeds) == shards * jobs
    # The same command, the same split.
    assert fuzz_streams(["xchg"], scheduler="random", executions=executions, seed=7,
                        shard=Shard(1, 3), jobs=2) == fuzz_streams(
        ["xchg"], scheduler="random", executions=executions, seed=7, shard=Shard(1, 3), jobs=2)


def test_dfs_splits_by_algorithm_and_cells_split_round_robin():
    algorithms = ["srcu", "xchg", "manual"]
    plans = [fuzz_streams(algorithms, scheduler="dfs", executions=10, seed=0,
                          shard=Shard(k, 2), jobs=2) for k in range(2)]
    got = sorted(s.algorithm for plan in plans for job in plan for s in job)
    assert got == sorted(algorithms)
    cells = [i for k in range(3) for job in split_cells(10, Shard(k, 3), 2) for i in job]
    assert sorted(cells) == list(range(10))
    assert split_cells(10, Shard(1, 3), 2) == [[1, 7], [4]]


# --- fuzz in jobs -----------------------------------------------------------

def test_fuzz_jobs_merge_counts_and_keep_the_split(capsys, tmp_path):
    path = tmp_path / "fuzz.json"
    argv = ("fuzz", "--algorithm", "xchg", "--scheduler", "random", "--executions", "60",
            "--seconds", "600", "--jobs", "2", "--json", str(path))
    code, out, err = run(capsys, *argv)
    assert code == 0, out + err
    assert "verdict: PASS (no failure; 60 executions" in out
    report = json.loads(path.read_text())
    assert (report["jobs"], report["shard"]) == (2, "1/1")
    (result,) = report["results"]
    split = result["job_split"]
    assert [(j["job"], j["executions"], j["programs"]) for j in split] == [
        (1, 30, "1+1*i"), (2, 30, "31+1*i")]
    assert result["executions"] == 60
    # Deterministic: the same command gives the same seeds and executions.
    run(capsys, *argv)
    again = json.loads(path.read_text())["results"][0]["job_split"]
    assert [(j["seed"], j["executions"]) for j in again] == [
        (j["seed"], j["executions"]) for j in split]


def test_fuzz_first_failure_stops_the_other_jobs_and_is_reported_with_its_token(
        capsys, tmp_path):
    path = tmp_path / "fuzz.json"
    token_file = tmp_path / "token.txt"
    code, out, err = run(capsys, "fuzz", "--algorithm", BROKEN, "--scheduler", "random",
                         "--executions", "1e9", "--seconds", "600", "--jobs", "2",
                         "--json", str(path), "--token-file", str(token_file))
    assert code == 1
    report = json.loads(path.read_text())
    (result,) = report["results"]
    token = result["token"]
    assert f"rerun:  concurrent-dirty replay {token}" in out
    assert token_file.read_text().strip() == token
    # Every job either failed itself or was stopped by the other's failure:
    # none ran its (huge) budget out.
    for job in result["job_split"]:
        assert job["status"] == "FAIL" or job["stopped_by"] == STOPPED, job
    from concurrent_dirty import replay

    assert replay(token).failed


def test_fuzz_shards_run_disjoint_programs(capsys, tmp_path):
    seen = []
    for k in (1, 2):
        path = tmp_path / f"shard{k}.json"
        code, out, err = run(capsys, "fuzz", "--algorithm", "xchg", "--scheduler", "random",
                             "--executions", "21", "--jobs", "1", "--shard", f"{k}/2",
                             "--json", str(path))
        assert code == 0, out + err
        (result,) = json.loads(path.read_text())["results"]
        (job,) = result["job_split"]
        seen.append((job["programs"], job["executions"]))
    assert seen == [("1+2*i", 11), ("2+2*i", 10)]


# --- stress and mutants in jobs and shards ----------------------------------

def test_stress_shard_runs_its_cells_only(capsys, tmp_path, shm_guard):
    path = tmp_path / "stress.json"
    code, out, err = run(capsys, "stress", "--engine", "threads", "--executions", "3",
                         "--shard", "2/3", "--jobs", "1", "--json", str(path), "--quiet")
    assert code == 0, out + err
    report = json.loads(path.read_text())
    assert [r["algorithm"] for r in report["results"]] == ["xchg"]
    assert report["shard"] == "2/3"


def test_stress_jobs_keep_the_cells_in_order(capsys, tmp_path, shm_guard):
    path = tmp_path / "stress.json"
    code, out, err = run(capsys, "stress", "--executions", "3", "--jobs", "2",
                         "--json", str(path), "--quiet")
    assert code == 0, out + err
    report = json.loads(path.read_text())
    assert [(r["algorithm"], r["engine"]) for r in report["results"]] == [
        (a, e) for a in ("srcu", "xchg", "manual") for e in ("threads", "processes")]
    assert [len(j["cells"]) for j in report["job_split"]] == [3, 3]
    assert all(r["executions"] == 3 for r in report["results"])


def test_stress_jobs_report_a_failure(capsys, tmp_path, shm_guard):
    code, out, err = run(capsys, "stress", "--algorithm", BROKEN, "--algorithm", "xchg",
                         "--engine", "threads", "--noise", "0.2", "--switch-interval", "1e-5",
                         "--slots", "1", "--pages", "8", "--on-behalf", "0.3",
                         "--seconds", "10", "--jobs", "2", "--quiet")
    assert code == 1, out
    assert "LOST DIRTY BIT [nonatomic-clear/threads" in out


def test_mutants_jobs_and_shards(capsys, tmp_path):
    rows = {}
    for shard in ("1/2", "2/2"):
        path = tmp_path / "zoo.json"
        code, out, err = run(capsys, "mutants", "--mutant", "skip-write-protect",
                             "--engine", "random", "--engine", "pct", "--engine", "dfs",
                             "--no-correct", "--seeds", "1", "--budget", "5", "--jobs", "2",
                             "--shard", shard, "--json", str(path), "--quiet")
        assert code == 0, out + err
        report = json.loads(path.read_text())
        rows[shard] = [c["engine"] for c in report["cells"]]
        assert report["shard"] == shard
    assert rows == {"1/2": ["random", "dfs"], "2/2": ["pct"]}


# --- Ctrl-C -----------------------------------------------------------------

def _descendants(pid):
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True,
                         text=True).stdout
    children = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_interrupt_ends_every_job_with_130(how):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "concurrent_dirty", "stress", "--engine", "processes",
         "--algorithm", "xchg", "--algorithm", "srcu", "--seconds", "120", "--jobs", "2",
         "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        # Both jobs and (on a machine that is not too loaded) their writers
        # running: a bounded wait, not a timing claim. The jobs themselves
        # must be there; what follows checks that every child that was
        # there is gone.
        deadline = time.monotonic() + 60
        while len(_descendants(proc.pid)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        children = _descendants(proc.pid)
        assert len(children) >= 2, children
        if how == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: every job's writers stopped, shared memory unlinked" in err
    deadline = time.monotonic() + 10
    while [c for c in children if _alive(c)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [c for c in children if _alive(c)]
    leaked = [n for n in os.listdir("/dev/shm")
              if any(n.startswith(f"cd-{c}-") for c in children)]
    assert not leaked


# --- the failure store ------------------------------------------------------

def _second_run_replays_first(db, json_path):
    first = cli("fuzz", "--algorithm", BROKEN, "--scheduler", "random", "--executions", "3000",
                "--jobs", "1", "--db", db)
    assert first.returncode == 1, first.stdout + first.stderr
    token = first.stdout.split("replay token: ", 1)[1].split()[0]
    second = cli("fuzz", "--algorithm", BROKEN, "--scheduler", "pct", "--executions", "3000",
                 "--jobs", "2", "--db", db, "--json", str(json_path))
    assert second.returncode == 1, second.stdout + second.stderr
    # The saved failure comes first, before any search.
    assert second.stdout.startswith("== nonatomic-clear under saved failure (--db)\n")
    assert f"replay token: {token}" in second.stdout
    report = json.loads(json_path.read_text())
    (result,) = report["results"]
    assert result["from_database"] is True and result["token"] == token
    assert report["saved_failures"][0]["status"] == "fails"
    return token


def test_directory_db_failure_found_by_one_process_is_replayed_first_by_another(tmp_path):
    db = str(tmp_path / "failures")
    _second_run_replays_first(db, tmp_path / "fuzz.json")


def _seed_fixed_and_old_tokens(database):
    """A token for xchg that passes (an empty schedule) and one of version 1."""
    from concurrent_dirty.dirtylog import resolve_algorithm
    from concurrent_dirty.harness.program import make_program
    from concurrent_dirty.search.failstore import key_for
    from concurrent_dirty.search.replay import pending_token

    scenario = Scenario(algorithm="xchg", slots=1, pages=4, writes=2, on_behalf=0.5)
    fixed = pending_token(resolve_algorithm("xchg"), scenario, make_program(scenario))
    database.save(key_for("xchg"), fixed.encode())
    database.save(key_for("xchg"), b"cd1.eNoLSS0uUchMS8svUkjOzytOTdFTyC8tKCgtUcjOz0lRyE0t")
    return fixed


def test_db_deletes_a_fixed_failure_and_leaves_an_old_version(tmp_path):
    from hypothesis.database import DirectoryBasedExampleDatabase

    from concurrent_dirty.search.failstore import saved_tokens

    path = str(tmp_path / "failures")
    database = DirectoryBasedExampleDatabase(path)
    fixed = _seed_fixed_and_old_tokens(database)
    done = cli("fuzz", "--algorithm", "xchg", "--scheduler", "random", "--executions", "20",
               "--jobs", "1", "--db", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the saved failure no longer fails: deleted from the database" in done.stderr
    assert "a saved token of another version, skipped and left" in done.stderr
    left = saved_tokens(database, "xchg")
    assert fixed not in left and len(left) == 1 and left[0].startswith("cd1.")


def test_db_a_file_is_a_usage_error(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    code, err = usage(capsys, "fuzz", "--db", str(target), "--executions", "1")
    assert code == 2 and err.count("\n") == 1
    assert "expected --db to be a directory or redis://host:port/N" in err


def test_db_redis_without_the_package_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    code, err = usage(capsys, "fuzz", "--db", "redis://127.0.0.1:1/0", "--executions", "1")
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'concurrent-dirty[redis]'" in err


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on this machine (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis package is not installed "
                                        "(pip install -e '.[redis]')")
    import redis

    port = _free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_redis_db_failure_found_by_one_process_is_replayed_first_by_another(redis_url,
                                                                           tmp_path):
    import redis

    token = _second_run_replays_first(redis_url, tmp_path / "fuzz.json")
    from hypothesis.extra.redis import RedisExampleDatabase

    from concurrent_dirty.search.failstore import saved_tokens

    database = RedisExampleDatabase(redis.Redis.from_url(redis_url))
    assert saved_tokens(database, BROKEN) == [token]


def test_fuzz_execution_runs_in_jobs(capsys):
    # --execution N with --jobs: every job explores that one program (it was a
    # usage error, rounds=None, when --rounds was not given).
    from concurrent_dirty.cli.main import main

    code = main(["fuzz", "--algorithm", "xchg", "--execution", "3", "--jobs", "2",
                 "--scheduler", "random", "--executions", "40", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: PASS (no failure; 40 executions" in out


@pytest.mark.jobs
def test_an_error_reading_the_jobs_ends_the_run_instead_of_losing_outcomes():
    # The parent runs job 1 itself while a thread reads the others'
    # messages: an error in that thread (here the caller's on_message) must
    # reach the caller and stop the local job, not drop job 2's outcome.
    from concurrent_dirty.search.pool import Job, run_jobs

    def on_message(index, kind, payload):
        if index == 1:
            raise RuntimeError("on_message failed for job 2")

    jobs = [Job(0, "tests.pool_tasks:emit_then_wait", {"seconds": 60.0}),
            Job(1, "tests.pool_tasks:emit_then_wait", {"seconds": 0.0})]
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="on_message failed for job 2"):
        run_jobs(jobs, on_message=on_message, local=True)
    assert time.monotonic() - start < 50  # the local job was stopped, not waited out


def test_a_delayed_job_gets_the_campaigns_seconds_less_its_delay():
    # Jobs after the first start up to 0.5 s late (run_jobs's start_after):
    # their --seconds shrink by as much, so every job ends by the bound.
    from concurrent_dirty.cli.scale import shortened
    from concurrent_dirty.search.pool import Job

    fuzz = shortened(Job(1, "f", {"options": {"seconds": 10.0, "rounds": 2}}), 0.75)
    assert fuzz.kwargs["options"] == {"seconds": 9.25, "rounds": 2} and fuzz.index == 1
    hyp = shortened(Job(2, "h", {"seconds": 0.5, "pins": {}}), 0.75)
    assert hyp.kwargs["seconds"] == 0.0
    untouched = {"options": {"seconds": 5.0}}
    shortened(Job(1, "f", untouched), 1.0)
    assert untouched == {"options": {"seconds": 5.0}}  # the campaign's own kwargs unchanged
