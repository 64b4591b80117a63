"""Exit codes shared by every `mailmatrix` command."""

OK = 0
RUN_FAILED = 1
USAGE = 2
INPUT_UNUSABLE = 3
ROWS_REJECTED = 4
ROWS_FAILED = 5  # `run` finished, but some rows failed (the report gives each reason)
STOPPED = 130  # interrupted (Ctrl-C, SIGTERM, SIGHUP): resume with `mailmatrix redrive`
