"""A --db URL's user and password never reach a message, a report or a
file (issue 20): a CI log must not show them."""

import json
import pickle

import pytest

from concurrent_dirty.cli.main import main
from concurrent_dirty.harness.credentials import MaskedUrl, mask_credentials, reveal
from concurrent_dirty.harness.output import write_text

URL = "redis://bob:S3CRET@127.0.0.1:1/0"  # port 1: refused at once, nothing listens
MASKED = "redis://***:***@127.0.0.1:1/0"


@pytest.mark.parametrize("text, masked", [
    ("redis://bob:S3CRET@db:6379/0", "redis://***:***@db:6379/0"),
    ("redis://:S3CRET@db:6379/0", "redis://:***@db:6379/0"),
    ("rediss://bob@db", "rediss://***@db"),
    ("--db redis://a:b@h/1 and unix://c:d@/run/r.sock", "--db redis://***:***@h/1 and "
                                                        "unix://***:***@/run/r.sock"),
    ("redis://db:6379/0", "redis://db:6379/0"),
    ("/tmp/failures@home", "/tmp/failures@home"),
    ("mail bob@example.org", "mail bob@example.org"),
])
def test_mask_credentials_hides_user_and_password_only(text, masked):
    assert mask_credentials(text) == masked


def test_a_masked_url_prints_masked_and_connects_with_the_real_value():
    url = MaskedUrl(URL)
    assert (str(url), repr(url), f"{url}", f"{url!r}", f"{url}") == (
        MASKED, repr(MASKED), MASKED, repr(MASKED), MASKED)
    assert reveal(url) == URL and url == URL
    again = pickle.loads(pickle.dumps(url))  # what a job process receives
    assert type(again) is MaskedUrl and reveal(again) == URL


@pytest.mark.parametrize("argv", [
    ["fuzz", "--algorithm", "xchg", "--seconds", "1", "--db", URL],
    ["mutants", "--mutant", "nonatomic-clear", "--budget", "1", "--quiet", "--db", URL],
    ["stress", "--db", URL],  # argparse's own error quotes the argument
])
def test_a_db_url_error_shows_no_credentials(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage error
        code = exc.code
    assert code == 2
    out, err = capsys.readouterr()
    assert "S3CRET" not in out + err and "bob" not in out + err
    assert MASKED in err


def test_a_report_quoting_a_db_url_or_a_command_line_is_written_masked(tmp_path):
    path = tmp_path / "report.json"
    report = {"command": f"concurrent-dirty fuzz --db {URL}", "db": URL,
              "db_masked": MaskedUrl(URL)}
    write_text(str(path), json.dumps(report))
    text = path.read_text()
    assert "S3CRET" not in text and "bob" not in text
    assert json.loads(text) == {"command": f"concurrent-dirty fuzz --db {MASKED}",
                                "db": MASKED, "db_masked": MASKED}
