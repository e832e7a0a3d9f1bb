"""Technician CLI: `python -m host_tools <command> --help`.

Exit codes: 0 success, 1 the operation failed (a check did not pass), 2 usage error.
"""
import argparse
import sys


def _pn532_sim(argv):
    from host_tools import pn532_sim
    return pn532_sim.main(argv)


def _demo(argv):
    from host_tools import demo
    return demo.main(argv)


def _vectors(argv):
    from host_tools import vectors
    return vectors.main(argv)


def _build(argv):
    from host_tools import build
    return build.main(argv)


def _provision(argv):
    from host_tools import provision
    return provision.main(argv)


def _journal(argv):
    from host_tools import journal_dump
    return journal_dump.main(argv)


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


COMMANDS = {
    "demo": (_demo, "emulated terminal takes a session of taps offline"),
    "pn532-sim": (_pn532_sim, "run the PN532 simulator on a TCP port / pty"),
    "vectors": (_vectors, "regenerate the PROTOCOL.md test vectors"),
    "build": (_build, "compile firmware + a board to .mpy (esp32: -march=xtensawin)"),
    "provision": (_provision, "check a config and put it on a terminal with mpremote"),
    "journal": (_journal, "read a flash image's payments and re-verify each one"),
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
