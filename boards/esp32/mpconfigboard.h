// POS terminal on an ESP32-WROOM-32.
#define MICROPY_HW_BOARD_NAME "OFFPAY POS terminal"
#define MICROPY_HW_MCU_NAME "ESP32"
// The console is the technician's way in; the app reads it itself (pos.console).
// Disabling the REPL for good is a custom build: see README, Hardening.
