# ESP32-WROOM-32 pin map of the POS terminal.  One place for every GPIO.
# Avoided: 6..11 (module's SPI flash), strapping pins 0/2/5/12/15, and 34..39
# for outputs (input only).
from micropython import const

LED_RED = const(25)
LED_GREEN = const(26)
LED_BLUE = const(27)
BUZZER = const(13)

# Till (register) link: UART2.
TILL_UART = const(2)
TILL_TX = const(17)
TILL_RX = const(16)
TILL_BAUD = const(115200)

# PN532 in HSU mode: UART1, plus its reset line.
PN532_UART = const(1)
PN532_TX = const(32)
PN532_RX = const(33)
PN532_RST = const(4)

# Optional SSD1306 128x64 display on I2C0.
I2C_ID = const(0)
I2C_SCL = const(22)
I2C_SDA = const(21)
DISPLAY_ADDR = const(0x3C)

CPU_HZ = const(240_000_000)
WDT_MS = const(8000)
