"""Technician CLI: `python -m host_tools <command> --help`.

Exit codes: 0 success, 1 the operation failed (a check did not pass), 2 usage error.
"""
import argparse
import sys


def _issuer(argv):
    """Create an issuer key pair: private key PEM + the public entry for terminals."""
    import json
    from cryptography.hazmat.primitives import serialization
    from host_tools import wallet_sim as ws
    ap = argparse.ArgumentParser(prog="host_tools issuer", description=_issuer.__doc__)
    ap.add_argument("--alg", choices=("ES256", "RS256"), default="ES256")
    ap.add_argument("--key-out", required=True, help="where to write the private key (PEM)")
    ap.add_argument("--not-before", type=int, default=0)
    ap.add_argument("--not-after", type=int, default=0xFFFFFFFF)
    a = ap.parse_args(argv)
    iss = ws.Issuer(alg=a.alg, not_before=a.not_before, not_after=a.not_after)
    pem = iss.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with open(a.key_out, "wb") as f:
        f.write(pem)
    print(json.dumps(iss.config()))
    return 0


def _module(name):
    # Imported on use: `--help` of one command never pays for the others.
    def run(argv):
        import importlib
        return importlib.import_module("host_tools." + name).main(argv)
    return run


COMMANDS = {
    "demo": (_module("demo"), "emulated terminal takes a session of taps offline"),
    "pn532-sim": (_module("pn532_sim"), "run the PN532 simulator on a TCP port / pty"),
    "vectors": (_module("vectors"), "regenerate the PROTOCOL.md test vectors"),
    "build": (_module("build"), "compile firmware + a board to .mpy (esp32: -march=xtensawin)"),
    "provision": (_module("provision"), "check a config and put it on a terminal with mpremote"),
    "journal": (_module("journal_dump"), "read a flash image's payments and re-verify each one"),
    "issuer": (_issuer, "create an issuer key and print its terminal config entry"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m host_tools <command> [--help]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print("  %-10s %s" % (name, text))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    fn, _ = COMMANDS[argv[0]]
    return fn(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
