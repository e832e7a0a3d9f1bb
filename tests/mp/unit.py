# A tiny test runner for firmware tests that execute inside the MicroPython unix port.
# A test file defines test_* functions and ends with `unit.run(globals())`.
import sys


class Skip(Exception):
    pass


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError("%s not raised by %s" % (exc.__name__, fn))


def run(g):
    only = sys.argv[1] if len(sys.argv) > 1 else None
    names = sorted(k for k in g if k.startswith("test_") and (only is None or only in k))
    passed = failed = 0
    for n in names:
        try:
            g[n]()
            passed += 1
            print("PASS", n)
        except Exception as e:  # report every failure, keep going
            failed += 1
            print("FAIL", n)
            sys.print_exception(e)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)
