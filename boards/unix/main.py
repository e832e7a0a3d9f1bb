import gc
import sys

# Loading modules leaves the heap in small pieces; hold one contiguous region
# through the imports and hand it back for the long-lived buffers.
gc.collect()
_hold = bytearray(16 * 1024)

import board
from pos import app

_hold = None
gc.collect()
sys.exit(app.main(board.wire) or 0)
