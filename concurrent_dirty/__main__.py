import signal
import sys


def _hold() -> None:
    """The report is out (or the interrupt line): a signal while the
    interpreter shuts down, which puts SIGINT back to its default, must not
    turn the exit code into a death by SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    try:  # a Ctrl-C while the command line's modules load or main starts: no traceback
        # The start-up guard (the package's __init__) hands over to this block.
        sys.modules[__package__ or "concurrent_dirty"]._end_startup()
        from .cli.main import main

        code = main()
        _hold()
    except KeyboardInterrupt:
        _hold()
        code = 130
        sys.stderr.write("\ninterrupted: stopped before anything was reported\n")
    from .harness.interrupt import exit_process  # signals are ignored by now

    exit_process(code)
