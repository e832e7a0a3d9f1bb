"""Technician CLI: `python -m host_tools <command> --help` (installed as `offpay`).

Exit codes: 0 success, 1 the operation failed (a check did not pass), 2 usage error.
"""
import argparse
import os
import sys


def _issuer(argv):
    """Create an issuer key pair: private key PEM + the public entry for terminals."""
    import json
    from cryptography.hazmat.primitives import serialization
    from host_tools import wallet_sim as ws
    ap = argparse.ArgumentParser(prog="offpay issuer", description=_issuer.__doc__,
                                 epilog="exit status: 0 written, 1 failed, 2 usage")
    ap.add_argument("--alg", choices=("ES256", "RS256"), default="ES256")
    ap.add_argument("--key-out", required=True, help="where to write the private key (PEM)")
    ap.add_argument("--not-before", type=int, default=0)
    ap.add_argument("--not-after", type=int, default=0xFFFFFFFF)
    a = ap.parse_args(argv)
    iss = ws.Issuer(alg=a.alg, not_before=a.not_before, not_after=a.not_after)
    pem = iss.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        with open(a.key_out, "wb") as f:
            f.write(pem)
    except OSError as e:
        print("issuer: cannot write %s: %s" % (a.key_out, e.strerror or e), file=sys.stderr)
        return 1
    print(json.dumps(iss.config()))
    return 0


def _module(name, fn="main"):
    # Imported on use: `--help` of one command never pays for the others.
    def run(argv):
        import importlib
        return getattr(importlib.import_module("host_tools." + name), fn)(argv)
    return run


COMMANDS = {
    "demo": (_module("demo"), "emulated terminal takes a session of taps offline"),
    "pn532-sim": (_module("pn532_sim"), "run the PN532 simulator on a TCP port / pty"),
    "vectors": (_module("vectors"), "regenerate the PROTOCOL.md test vectors"),
    "build": (_module("build"), "compile firmware + a board to .mpy, with a manifest of hashes"),
    "provision": (_module("provision"), "check a config with the firmware's parser, put it on a terminal"),
    "flash": (_module("flash"), "write MicroPython, the partition table and the firmware to an ESP32"),
    "lock": (_module("lock", "main_lock"), "put a terminal in production mode and lock its console"),
    "unlock": (_module("lock", "main_unlock"), "open a locked terminal's console with a technician token"),
    "logs": (_module("logs"), "journal + event log of a terminal or a flash dump, re-verified, JSON lines"),
    "replay": (_module("replay"), "re-upload a pulled journal; replay a recorded NFC session"),
    "emulate": (_module("emulate"), "a virtual terminal on a pty, for mpremote and every subcommand"),
    "journal": (_module("journal_dump"), "read a flash image's payments and re-verify each one"),
    "issuer": (_issuer, "create an issuer key and print its terminal config entry"),
    "receiver": (_module("receiver.cli", "receiver_main"), "run the acquirer's receiver (HTTPS, mutual TLS)"),
    "ledger": (_module("receiver.cli", "ledger_main"), "print the receiver's stored payments, one JSON per line"),
    "revoke": (_module("receiver.cli", "revoke_main"), "revoke a terminal or its certificate at the receiver"),
    "terminals": (_module("receiver.cli", "terminals_main"), "print the terminals the receiver knows, JSON lines"),
    "pki": (_module("pki"), "create the acquirer CA, server/terminal certificates, update key"),
    "conformance": (_module("conformance"), "run a wallet through PROTOCOL.md case by case against the firmware"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        prog = "offpay" if os.path.basename(sys.argv[0]) == "offpay" else "python -m host_tools"
        print("usage: %s <command> [--help]\n\ncommands:" % prog)
        for name, (_, text) in COMMANDS.items():
            print("  %-10s %s" % (name, text))
        print("\nexit status (every command): 0 done, 1 failed (the message names the problem), 2 usage")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    fn, _ = COMMANDS[argv[0]]
    return fn(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
