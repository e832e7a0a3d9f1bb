import gc

# Loading modules leaves the heap in small pieces; hold one contiguous region
# through the imports and hand it back for the long-lived buffers.
gc.collect()
_hold = bytearray(20 * 1024)

import board
from pos import app

_hold = None
gc.collect()
app.main(board.wire)
