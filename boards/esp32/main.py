import gc

# Loading modules leaves the heap in small pieces; hold one contiguous region
# through the imports and hand it back for the long-lived buffers.
gc.collect()
_hold = bytearray(20 * 1024)

import board
from pos import app

_hold = None
gc.collect()
try:
    app.main(board.wire)
finally:
    # A locked terminal never falls through to the REPL, whatever ended the
    # app: it resets (and boots locked again). An open one (test mode, or a
    # technician's unlock) leaves the REPL to the technician.
    from pos import console
    if console.current is not None and not console.current.lock.is_open():
        import machine
        machine.reset()
