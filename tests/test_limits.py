"""Every numeric option's usage error names its real range, and the range
is honoured: the bounds themselves are accepted."""

import pytest

from concurrent_dirty.cli.main import build_parser, main

SECONDS = "a number of seconds > 0 and <= 10000000"
JOBS = "a number of jobs from 1 to 1024"
SEED = "an integer seed from -9223372036854775808 to 9223372036854775807"

# (subcommand, option, the range as the error states it, a value just outside,
#  the bounds that must parse)
LIMITS = [
    ("perf", "--seconds", SECONDS, "0", ["1e-9", "10000000"]),
    ("perf", "--think-us", "a number of microseconds from 0 to 1000000", "-1", ["0", "1e6"]),
    ("perf", "--exit-rate", "a probability from 0 to 1", "2", ["0", "1"]),
    ("perf", "--seed", SEED, "9223372036854775808",
     ["-9223372036854775808", "9223372036854775807"]),
    ("fuzz", "--execution", "an execution number from 1 to 4611686018427387904", "0",
     ["1", "4611686018427387904"]),
    ("stress", "--writers", "a number of writers from 1 to 64", "10000", ["1", "64"]),
    ("stress", "--slots", "a number of slots from 1 to 4096", "1e6", ["1", "4096"]),
    ("stress", "--pages", "a number of pages per slot from 1 to 262144", "1e9",
     ["1", "262144"]),
    ("stress", "--on-behalf", "a probability from 0 to 1", "2", ["0", "1"]),
    ("stress", "--seconds", SECONDS, "0", ["1e-9", "10000000"]),
    ("stress", "--writes", "a number of writes from 1 to 1099511627776", "1099511627777",
     ["1", "1099511627776"]),
    ("stress", "--executions", "a number of executions from 1 to 1000000000000", "0",
     ["1", "1e12"]),
    ("stress", "--interval", "a number of seconds from 0 to 10000000", "-1", ["0", "1e7"]),
    ("stress", "--lock-timeout", SECONDS, "1e8", ["0.001", "1e7"]),
    ("stress", "--seed", SEED, "9223372036854775808",
     ["-9223372036854775808", "9223372036854775807"]),
    ("stress", "--noise", "a probability from 0 to 1", "1.5", ["0", "1"]),
    ("stress", "--switch-interval", SECONDS, "0", ["1e-6", "1e7"]),
    ("stress", "--watchdog", SECONDS, "0", ["0.001", "1e7"]),
    ("fuzz", "--watchdog", SECONDS, "-1", ["0.001", "1e7"]),
    ("mutants", "--watchdog", SECONDS, "inf", ["0.001", "1e7"]),
    ("fuzz", "--executions", "a number of executions from 1 to 1000000000000", "1e13",
     ["1", "1000000000000"]),
    ("fuzz", "--seconds", SECONDS, "inf", ["0.5", "1e7"]),
    ("fuzz", "--depth", "a bug depth from 1 to 10", "11", ["1", "10"]),
    ("fuzz", "--preemptions", "a preemption bound from 0 to 50", "51", ["0", "50"]),
    ("fuzz", "--writers", "a number of writers from 1 to 16", "17", ["1", "16"]),
    ("fuzz", "--slots", "a number of slots from 1 to 64", "65", ["1", "64"]),
    ("fuzz", "--pages", "a number of pages per slot from 1 to 65536", "65537",
     ["1", "65536"]),
    ("fuzz", "--writes", "a number of writes from 1 to 10000", "2.5", ["1", "10000"]),
    ("fuzz", "--rounds", "a number of rounds from 0 to 1000", "-1", ["0", "1000"]),
    ("fuzz", "--on-behalf", "a probability from 0 to 1", "2", ["0", "1"]),
    ("fuzz", "--seed", SEED, "-9223372036854775809", ["0", "9223372036854775807"]),
    ("fuzz", "--max-steps", "a step bound from 10 to 10000000", "9", ["10", "10000000"]),
    ("stress", "--clear-words", "a number of words per CLEAR from 0 to 262144", "-1",
     ["0", "262144"]),
    ("fuzz", "--clear-words", "a number of words per CLEAR from 0 to 262144", "262145",
     ["0", "262144"]),
    ("stress", "--pml-entries", "a number of PML entries from 1 to 512", "0", ["1", "512"]),
    ("stress", "--stuck-rounds", "a number of rounds from 0 to 16", "17", ["0", "16"]),
    ("fuzz", "--stuck-rounds", "a number of rounds from 0 to 16", "-1", ["0", "16"]),
    ("fuzz", "--pml-entries", "a number of PML entries from 1 to 512", "513", ["1", "512"]),
    ("stress", "--ring-soft-limit", "a soft limit from 2 to 65535", "1", ["2", "65535"]),
    ("fuzz", "--ring-soft-limit", "a soft limit from 2 to 65535", "65536", ["2", "65535"]),
    ("stress", "--ring-batch", "a batch from 0 to 65536", "-1", ["0", "65536"]),
    ("fuzz", "--ring-batch", "a batch from 0 to 65536", "65537", ["0", "65536"]),
    ("mutants", "--seeds", "a number of seeds from 1 to 100", "101", ["1", "100"]),
    ("mutants", "--budget", SECONDS, "nan", ["0.01", "10000000"]),
    ("fuzz", "--jobs", JOBS, "1025", ["1", "1024"]),
    ("stress", "--jobs", JOBS, "0", ["1", "1024"]),
    ("stress", "--guest-delay", "a number of pause iterations from 0 to 16777216", "-1",
     ["0", "16777216"]),
    ("stress", "--toggles", "a number of toggles from 0 to 64", "65", ["0", "64"]),
    ("mutants", "--jobs", JOBS, "2.5", ["1", "1024"]),
    ("perf", "--run-seconds", SECONDS, "0", ["1e-9", "10000000"]),
    ("perf", "--harvest-ms", "a number of milliseconds > 0 and <= 10000000", "0",
     ["1e-3", "10000000"]),
    ("perf", "--srcu-sync-us", "a number of microseconds > 0 and <= 1000000", "-1",
     ["1e-3", "1000000"]),
]


@pytest.mark.parametrize("command, option, expected, bad, _", LIMITS,
                         ids=[f"{c} {o}" for c, o, *_ in LIMITS])
def test_a_number_out_of_range_names_the_range(capsys, command, option, expected, bad, _):
    with pytest.raises(SystemExit) as info:
        main([command, option, bad])
    out, err = capsys.readouterr()
    assert info.value.code == 2
    assert err == f"concurrent-dirty: error: argument {option}: expected {expected}, " \
                  f"got {bad!r}\n"
    assert out == ""


@pytest.mark.parametrize("command, option, expected, _, bounds", LIMITS,
                         ids=[f"{c} {o}" for c, o, *_ in LIMITS])
def test_the_stated_bounds_are_accepted(command, option, expected, _, bounds):
    parser = build_parser()
    dest = option.lstrip("-").replace("-", "_")
    for text in bounds:
        value = getattr(parser.parse_args([command, option, text]), dest)
        assert value == float(text) if "." in text or "e" in text else value == int(text)


def test_every_numeric_option_is_covered():
    """A new numeric option must come with its limit here."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    numeric = set()
    for command, p in sub.choices.items():
        for action in p._actions:
            if getattr(action.type, "__qualname__", "").startswith("_number"):
                numeric.add((command, action.option_strings[0]))
    assert numeric == {(c, o) for c, o, *_ in LIMITS}


def test_slots_times_pages_is_capped_in_all(capsys):
    code = main(["stress", "--slots", "2", "--pages", "262144"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err == ("concurrent-dirty: error: expected --slots x --pages at most 262144 guest "
                   "pages in all, got 2 x 262144 = 524288\n")
