import sys

if __name__ == "__main__":
    try:  # a Ctrl-C while the command line's modules load or main starts: no traceback
        # The start-up guard (the package's __init__) hands over to this block.
        sys.modules[__package__ or "concurrent_dirty"]._end_startup()
        from .cli.main import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: stopped before anything was reported\n")
        sys.exit(130)
    sys.exit(code)
