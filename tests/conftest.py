import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def shm_guard():
    """Fails the test if it leaves a shared-memory segment behind. It looks
    only at this process's own segments (``live_segments()`` and the names
    in /dev/shm with this pid's ``cd-<pid>-`` prefix), never at the rest of
    /dev/shm, so other programs on the machine cannot make a test fail."""
    from concurrent_dirty.model.arena import live_segments

    prefix = f"cd-{os.getpid()}-"

    def own():
        try:
            return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}
        except FileNotFoundError:
            return set()

    before = own()
    yield
    assert live_segments() == [], f"segments still linked: {live_segments()}"
    leaked = sorted(own() - before)
    assert not leaked, f"shared-memory segments left behind: {leaked}"


#: The long tests' markers, by file and test function (all its
#: parametrizations; "*": every test of the file):
#: the default run (pyproject's addopts) deselects them, so that the
#: README's `python3 -m pytest` takes about a minute; `.ci/run` runs them
#: with `-m "slow or jobs or signals or kvm"`, and `-m ""` runs everything.
#: A new long test can carry its marker itself (`@pytest.mark.slow`).
LONG: dict[str, dict[str, str]] = {
    "test_algorithms.py": {
        "test_an_error_mid_execution_stops_long_running_writers": "slow",
        "test_builtin_algorithm_loses_no_dirty_bit": "slow",
        "test_free_running_defaults_catch_races_in_narrow_windows": "slow",
        "test_noise_is_on_by_default_and_zero_turns_it_off": "slow",
        "test_workloads_and_odd_slot_sizes_lose_nothing": "slow",
    },
    "test_atomic.py": {
        "test_fetch_add_loses_no_update_between_real_processes": "slow",
    },
    "test_cli.py": {
        "test_broken_algorithm_exits_1_with_report_and_rerun": "slow",
        "test_sigint_stops_children_and_unlinks_shared_memory": "signals",
    },
    "test_execution_model.py": {
        "test_the_same_scenario_and_seed_make_the_same_writes_in_every_engine": "slow",
    },
    "test_failures.py": {
        "test_a_harvester_that_cannot_be_unwound_is_abandoned_cleanly": "slow",
        "test_mutants_abandoned_for_good_still_print_their_table": "slow",
        "test_a_harvester_abandoned_in_a_job_process_keeps_its_report": "jobs",
        "test_fuzz_hang_leaves_a_token_that_replay_accepts": "slow",
        "test_stress_error_ends_the_run_and_reports_the_rest_not_run": "slow",
        "test_stress_harvester_hung_in_get_dirty_log_ends_the_run_with_its_stack": "slow",
        "test_stress_writer_hung_in_mark_page_dirty_ends_the_run_with_its_stack": "slow",
    },
    "test_hypothesis_fuzz.py": {
        "test_draws_do_not_depend_on_timing": "slow",
        "test_hypothesis_shrinks_the_broken_clear_to_one_preemption": "slow",
        "test_the_strategy_draws_both_scopes_and_every_write_kind": "slow",
        "test_interleavings_takes_mutant_names_and_the_report_says_the_count_is_minimal": "slow",
    },
    "test_mutants.py": {
        "test_benign_look_alikes_are_never_reported_by_the_controlled_engine": "slow",
        "test_benign_look_alikes_stay_clean_free_running": "slow",
        "test_mutants_command_passes_on_a_small_controlled_table": "slow",
    },
    "test_paths.py": {
        "test_algorithms_lose_nothing_with_pml_free": "slow",
        "test_algorithms_lose_nothing_with_pml_under_control": "slow",
        "test_algorithms_lose_nothing_with_the_fast_page_fault_free": "slow",
        "test_algorithms_lose_nothing_with_the_fast_page_fault_under_control": "slow",
        "test_an_old_signature_algorithm_still_runs_free": "slow",
        "test_manual_with_multi_word_clears_loses_nothing_free": "slow",
        "test_manual_with_multi_word_clears_loses_nothing_under_control": "slow",
    },
    "test_perf.py": {
        "test_plot_writes_png_and_svg": "slow",
    },
    "test_plugin.py": {
        "test_dirty_check_under_control_has_fuzz_defaults_and_finds_the_broken_clear": "slow",
        "test_dirty_fixture_runs_each_engine": "slow",
        "test_replay_token_option_adds_a_failing_test": "slow",
    },
    "test_program_space.py": {
        "test_dfs_over_varied_programs_spends_luby_budgets_per_program": "slow",
    },
    "test_ring.py": {
        "test_ring_look_alikes_are_never_reported_by_the_default_search": "slow",
        "test_ring_mutants_are_found_by_the_default_search": "slow",
        "test_the_ring_loses_nothing_free": "slow",
        "test_the_ring_loses_nothing_under_control": "slow",
    },
    "test_scale.py": {
        "test_directory_db_failure_found_by_one_process_is_replayed_first_by_another": "jobs",
        "test_fuzz_execution_runs_in_jobs": "jobs",
        "test_fuzz_first_failure_stops_the_other_jobs_and_is_reported_with_its_token": "jobs",
        "test_fuzz_jobs_merge_counts_and_keep_the_split": "jobs",
        "test_interrupt_ends_every_job_with_130": "signals",
        "test_mutants_jobs_and_shards": "jobs",
        "test_redis_db_failure_found_by_one_process_is_replayed_first_by_another": "jobs",
        "test_stress_jobs_keep_the_cells_in_order": "jobs",
        "test_stress_jobs_report_a_failure": "jobs",
    },
    "test_signals.py": {
        "*": "signals",
    },
    # Moved out of the default run on 2026-12-03 (it had grown to 165 s):
    # job processes, interrupts, and the longest quality tests.
    "test_campaign.py": {
        "test_fuzz_parity_three_ways": "jobs",
        "test_mutants_parity_three_ways": "jobs",
        "test_two_jobs_failure_time_and_execution_are_the_finders": "jobs",
        "test_two_jobs_interrupted_after_an_algorithm_keep_its_report": "signals",
    },
    "test_readme_pytest_example.py": {
        "test_the_readme_example_reports_a_counterexample_proven_minimal": "slow",
    },
}

#: The default run's expression (pyproject.toml's addopts).
DEFAULT_SELECTION = "not slow and not jobs and not signals and not kvm"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        path, _, function = item.nodeid.split("[", 1)[0].partition("::")
        tests = LONG.get(path.rpartition("/")[2], {})
        marker = tests.get(function) or tests.get("*")
        if marker is not None:
            item.add_marker(getattr(pytest.mark, marker))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if config.getoption("markexpr") == DEFAULT_SELECTION:
        terminalreporter.write_line(
            "the long tests (markers slow, jobs, signals, kvm) were left out: "
            "python3 -m pytest -m '' runs everything")
