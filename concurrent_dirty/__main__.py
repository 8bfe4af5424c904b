import sys

if __name__ == "__main__":
    try:  # a Ctrl-C while the command line's modules load or main starts: no traceback
        from . import _end_startup

        _end_startup()  # the start-up guard (see __init__) hands over to this block
        from .cli.main import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: stopped before anything was reported\n")
        sys.exit(130)
    sys.exit(code)
