"""Helpers shared by the interop scripts: how they report a result or a failure.

Each script prints exactly one JSON object on stdout when it got that far, and otherwise exits
with status 1 and a message on stderr that says which step failed and why.
"""

import json
import sys

# Upper bound, in seconds, for any single call or wait in these scripts. The Rust tests kill a
# script that runs much longer than this.
TIMEOUT = 10.0


def emit(result):
    """Prints the script's result as one JSON object."""
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)


def fail(step, error):
    """Stops the script: `step` failed with `error` (an exception or a message)."""
    detail = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    print(f"{sys.argv[0]}: {step} failed: {detail}", file=sys.stderr, flush=True)
    sys.exit(1)


def step(name, action):
    """Runs `action()` and returns its value, or stops the script naming the failed step."""
    try:
        return action()
    except Exception as error:  # every failure becomes a message naming the step
        fail(name, error)
