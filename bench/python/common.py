"""Shared helpers of the CPython benchmark scripts.

The Rust harness runs a script as ``python3 <script>.py WORKLOAD [options]``
and drives it over stdin/stdout, one JSON line per reply, so that CPython's
samples interleave with multiproc's on the same (noisy) machine:

    script  -> {"ready": true, "python": "3.11.7"}     after its setup
    harness -> sample        script -> {"sample": X}   X timed here, in the row's unit
    harness -> done          script -> {"done": true, "checked": N}, then exits 0

A failed check prints ``check failed: ...`` on stderr and exits 1; the harness
shows that message. End of stdin counts as ``done``.

Run a script by hand to try it: type ``sample`` and ``done`` on its stdin.
"""

import argparse
import json
import platform
import sys


def parser(description):
    """An argument parser with the workload name."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload")
    return p


def _reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(sample, finish):
    """Answers the harness: ``sample()`` returns one timed, checked figure;
    ``finish()`` tears down and returns the number of results checked."""
    _reply({"ready": True, "python": platform.python_version()})
    for line in sys.stdin:
        command = line.strip()
        if command == "sample":
            _reply({"sample": sample()})
        elif command == "done":
            break
        elif command:
            fail(f"unknown command {command!r}")
    _reply({"done": True, "checked": finish()})


def fail(message):
    """Stops with a message on stderr and a non-zero exit (a failed check)."""
    print(f"check failed: {message}", file=sys.stderr, flush=True)
    sys.exit(1)
