"""The till (register) link on the ESP32: UART2 as asyncio streams.

    port = TillPort(uart=None)            # default: UART2, 115200, TX 17, RX 16
    await port.start(handler)             # handler(reader, writer), started once

Same start()/close() as boards/unix/tillport.py (a TCP server there); a UART
has exactly one "connection", for as long as the terminal runs.
"""
import asyncio

import pins


class TillPort:
    def __init__(self, uart=None):
        if uart is None:
            from machine import UART
            uart = UART(pins.TILL_UART, baudrate=pins.TILL_BAUD, tx=pins.TILL_TX,
                        rx=pins.TILL_RX, rxbuf=512)
        self.uart = uart
        self._task = None

    async def start(self, handler):
        reader = asyncio.StreamReader(self.uart)
        writer = asyncio.StreamWriter(self.uart, {})
        self._task = asyncio.create_task(handler(reader, writer))
        return self._task

    def close(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None
