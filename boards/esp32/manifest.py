# Freeze the firmware into the ESP32 image, so code and the P-256 table run from
# flash instead of taking the heap (the unix port cannot do this; see README,
# "Memory"). Relative paths are relative to this file (makemanifest runs it from
# this directory). The module list is boards/modules.json, shared with
# `offpay build`. Built by the board definition in this directory:
#   make -C ports/esp32 BOARD_DIR=/path/to/boards/esp32
# Not built in CI: there is no ESP-IDF toolchain on these machines.
import json

include("$(PORT_DIR)/boards/manifest.py")
_mods = json.load(open("../modules.json"))
package(_mods["firmware"], base_path="../../firmware")
for _name in _mods["boards"]["esp32"]["modules"]:
    module(_name + ".py")
# main.py stays on the file system (offpay flash copies it), so a technician can
# replace the entry script without rebuilding the image.
