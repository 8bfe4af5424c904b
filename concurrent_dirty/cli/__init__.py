"""The command line (``concurrent-dirty``): argument parsing, progress and
tables, exit codes. Layer 7, the top: nothing imports it but
``__main__`` and the console script.
"""
