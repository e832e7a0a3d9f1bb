# MicroPython board definition for the POS terminal (ESP32-WROOM-32, 4 MiB
# flash), in the layout of ports/esp32/boards/*. Build with ESP-IDF:
#   make -C ports/esp32 BOARD_DIR=/path/to/boards/esp32
# Not built here: these machines have no ESP-IDF toolchain (README, Technician).
set(IDF_TARGET esp32)

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    boards/sdkconfig.ble
    ${MICROPY_BOARD_DIR}/sdkconfig.board
)

# The firmware frozen into the image (module list: boards/modules.json).
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
