# These are MicroPython scripts, run in the unix port by tests/test_journal*.py and
# tests/test_boards.py; pytest must not import them as CPython test modules.
collect_ignore_glob = ["*.py"]
