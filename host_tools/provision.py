"""Provision a terminal: check a config, then put it on the terminal's flash with
mpremote (raw REPL `fs cp`, then an atomic rename on the device).

Works the same on an ESP32 over USB (`--device /dev/ttyUSB0`) and on the
emulated terminal, whose REPL `host_tools.emulator.Emulator.repl()` serves on
`socket://127.0.0.1:PORT`. `resume` keeps mpremote from soft-resetting the device.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIG_PATH = {"esp32": "/config.json", "unix": "/flash/config.json"}


class ProvisionError(Exception):
    pass


def mpremote():
    return str(Path(sys.executable).with_name("mpremote"))


def check_config(cfg):
    """The checks the terminal makes at boot, made before anything is sent."""
    try:
        if len(bytes.fromhex(cfg["terminal_id"])) != 8:
            raise ProvisionError("terminal_id must be 16 hex digits")
        if not 1 <= len(cfg["merchant_id"].encode()) <= 16:
            raise ProvisionError("merchant_id must be 1..16 bytes")
        if not isinstance(cfg["currency"], int) or not 0 < cfg["currency"] < 1000:
            raise ProvisionError("currency must be an ISO 4217 numeric code")
        issuers = cfg.get("issuers", [])
        if not issuers or len(issuers) > 16:
            raise ProvisionError("1..16 issuer keys are needed")
        for i in issuers:
            if i["alg"] not in ("ES256", "RS256") or len(bytes.fromhex(i["kid"])) != 8:
                raise ProvisionError("bad issuer entry %r" % (i.get("kid"),))
            bytes.fromhex(i["key"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ProvisionError("config: %s" % (e,))


def provision(device, config_file, board="esp32", out=print):
    cfg = json.loads(Path(config_file).read_text())
    check_config(cfg)
    dest = CONFIG_PATH[board]
    out("copying %s to %s:%s" % (config_file, device, dest))
    cmd = [mpremote(), "connect", device, "resume", "fs", "cp", str(config_file), ":" + dest + ".tmp",
           "+", "exec", "import os; os.rename(%r, %r); print('PROVISIONED', os.stat(%r)[6])"
           % (dest + ".tmp", dest, dest)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode or "PROVISIONED" not in r.stdout:
        raise ProvisionError("mpremote failed: " + (r.stderr or r.stdout).strip()[-500:])
    out(r.stdout.strip().splitlines()[-1])
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="host_tools provision", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", required=True, help="serial port, or socket://host:port")
    ap.add_argument("--config", required=True, help="terminal config JSON (PROTOCOL.md section 7)")
    ap.add_argument("--board", choices=sorted(CONFIG_PATH), default="esp32")
    a = ap.parse_args(argv)
    try:
        return provision(a.device, a.config, a.board)
    except (ProvisionError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        print("provision failed: %s" % (e,), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
