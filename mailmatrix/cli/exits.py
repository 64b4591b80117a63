"""Exit codes shared by every `mailmatrix` command."""

OK = 0
RUN_FAILED = 1
USAGE = 2
INPUT_UNUSABLE = 3
ROWS_REJECTED = 4
STOPPED = 130  # interrupted (Ctrl-C, SIGTERM): resume with `mailmatrix redrive`
