"""The till (register) link on the unix board: a TCP server on loopback.

    port = TillPort(host="127.0.0.1", port=None)   # port: POS_TILL "host:port" or "port"
    server = await port.start(handler)            # handler(reader, writer), per connection
    port.close()

`reader`/`writer` are asyncio streams (read(n), write(b), await drain()),
exactly what boards/esp32/tillport.py hands over for UART2, so the protocol
code (pos.till.read_line + the app) is the same on both boards.
"""
from micropython import const
import os

import asyncio

_DEFAULT_PORT = const(7070)


def _addr(host, port):
    spec = os.getenv("POS_TILL")
    if port is None and spec:
        if ":" in spec:
            h, p = spec.rsplit(":", 1)
            return h or host, int(p)
        return host, int(spec)
    return host, _DEFAULT_PORT if port is None else port


class TillPort:
    def __init__(self, host="127.0.0.1", port=None):
        self.host, self.port = _addr(host, port)
        self._server = None

    async def start(self, handler):
        """Serve `handler(reader, writer)` for each till connection."""

        async def serve(reader, writer):
            try:
                await handler(reader, writer)
            finally:
                # Every connection ends closed, whatever the handler did.
                try:
                    writer.close()
                    await writer.wait_closed()
                except OSError:
                    pass

        self._server = await asyncio.start_server(serve, self.host, self.port)
        return self._server

    def close(self):
        if self._server is not None:
            self._server.close()
            self._server = None
