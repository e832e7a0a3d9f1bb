"""Progress bars for long technician work (rich, pinned in requirements.txt).

    with bar("copy", total_bytes) as advance:
        advance(done_bytes)          # absolute count, as mpremote and esptool report it
        advance(done, total=n)       # a total learnt on the way (None at the start)

Drawn on stderr, and only when stderr is a terminal (or enabled=True), so
scripted runs and tests get clean output.
"""
import contextlib
import sys


@contextlib.contextmanager
def bar(label, total, enabled=None, unit="bytes"):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda done, total=None: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(TextColumn("{task.description}"), BarColumn(), count,
                  TimeRemainingColumn(), console=Console(stderr=True), transient=False) as p:
        task = p.add_task(label, total=total)

        def advance(done, total=None):
            if total is not None:
                p.update(task, total=total)
            p.update(task, completed=done)
        yield advance
