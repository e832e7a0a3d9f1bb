"""Progress bars for long technician work (rich, which esptool already brings).

    with bar("copy", total_bytes) as advance:
        advance(done_bytes)          # absolute count, as mpremote and esptool report it

Drawn on stderr, and only when stderr is a terminal, so scripted runs and
tests get clean output.
"""
import contextlib
import sys


@contextlib.contextmanager
def bar(label, total, enabled=None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=False) as p:
        task = p.add_task(label, total=total)
        yield lambda done: p.update(task, completed=done)
