import sys

if __name__ == "__main__":
    try:  # a Ctrl-C while the command line's modules load: no traceback either
        from .cli.main import main
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: stopped before anything was reported\n")
        sys.exit(130)
    sys.exit(main())
