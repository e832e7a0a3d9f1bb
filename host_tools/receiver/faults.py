"""TEST ONLY: server errors on demand, for the upload fault campaign
(tests/test_fault_campaign.py). A proxy can cut, delay or drop the bytes of a
TLS connection, but it cannot make the receiver answer 500 before or after it
committed: these hooks do.

They are off unless the receiver is started with `--fault-file PATH` (or a
Receiver is constructed with faults=FaultFile(path)); a deployment never
passes that, and nothing in a request can switch them on. The file is a
queue of lines

    <terminal id 16 hex | *> <500-before | 500-after>

An upload from a terminal takes (and deletes) the first line for its id or
for `*`, under an exclusive lock, so several receiver processes can share one
file and each line fires exactly once:
  500-before  answer 500 internal before the transaction (nothing stored)
  500-after   answer 500 internal after the transaction committed
Each line taken is logged ("TEST FAULT ...") to stderr.
"""
import fcntl
import os
import sys

KINDS = ("500-before", "500-after")


class InjectedFault(Exception):
    """Raised by the hooks; the app answers it with 500 internal, exactly as
    it answers a database that went away."""


class FaultFile:
    def __init__(self, path):
        self.path = os.fspath(path)
        open(self.path, "a").close()

    def take(self, terminal_id):
        """The fault queued for this terminal (its line removed), or None."""
        try:
            if os.path.getsize(self.path) == 0:
                return None
        except OSError:
            return None
        with open(self.path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            lines = f.read().splitlines()
            for i, line in enumerate(lines):
                parts = line.split()
                if len(parts) == 2 and parts[0] in (terminal_id, "*") and parts[1] in KINDS:
                    del lines[i]
                    f.seek(0)
                    f.truncate()
                    f.write("".join(x + "\n" for x in lines))
                    f.flush()
                    print("TEST FAULT %s for terminal %s" % (parts[1], terminal_id), file=sys.stderr, flush=True)
                    return parts[1]
        return None


def add(path, kind, terminal_id="*"):
    """Queue one fault (the test's side)."""
    if kind not in KINDS:
        raise ValueError(kind)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("%s %s\n" % (terminal_id, kind))


def pending(path, terminal_id=None):
    """Lines still queued (for terminal_id, or all)."""
    try:
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for x in lines if x.strip() and (terminal_id is None or x.split()[0] == terminal_id))


def discard(path, terminal_id):
    """Remove the lines still queued for terminal_id; returns how many there were."""
    try:
        f = open(path, "r+")
    except FileNotFoundError:
        return 0
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().splitlines()
        keep = [x for x in lines if x.split()[:1] != [terminal_id]]
        if len(keep) != len(lines):
            f.seek(0)
            f.truncate()
            f.write("".join(x + "\n" for x in keep))
        return len(lines) - len(keep)
