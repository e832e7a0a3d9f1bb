# Freeze the firmware into the ESP32 image, so code and the P-256 table run from
# flash instead of taking the heap (the unix port cannot do this; see README,
# "Memory"). Relative paths are relative to this file.
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/boards/esp32/manifest.py
# Not built in CI: there is no ESP-IDF toolchain on these machines.
include("$(PORT_DIR)/boards/manifest.py")
package("pos", base_path="../../firmware")
for name in ("board", "feedback", "flash", "hw", "pins", "tillport", "wifi"):
    module(name + ".py")
