# Bench stand-in for asyncio (the qemu port has none): enough for the firmware
# to import, and for bench/esp32/mp/tap_session.py to run a charge by driving
# its coroutine to the end. Nothing is ever waited on: the recorded or
# replayed reader has its answer ready, so sleep_ms returns at once.


def sleep_ms(ms):
    return
    yield  # a generator: `await sleep_ms(n)` completes without suspending


def sleep(s):
    return
    yield


def create_task(coro):
    # The only task a tap starts is the removal watcher; the session clears
    # the field itself after each tap (the phone leaves at once).
    coro.close()


def run(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as e:
        return e.value
