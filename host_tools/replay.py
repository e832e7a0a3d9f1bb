"""`offpay replay`: reproduce a field problem on a desk.

    offpay replay upload --journal journal.bin --url https://127.0.0.1:8443/v1/upload \\
        --ca ca.pem --cert terminal.pem --key terminal-key.pem
        Re-uploads a pulled journal (`offpay logs --raw-journal journal.bin`) to
        a receiver, in batches as the terminal sends them (docs/upload.md,
        host_tools/receiver/wire.py builds the body). Safe to run twice: the
        receiver stores records idempotently by (terminal, record id), and a
        batch it already holds is simply acknowledged again.

    offpay replay session --log logs.jsonl --config cfg.json --amount 1250
        Plays the recorded APDU exchanges (`offpay logs` "apdu" lines) back
        through the emulated terminal: a simulated phone answers each command
        with the recorded response, in order, and the terminal decides as it
        did in the field. The terminal's fresh challenge differs from the
        recorded one, so a genuine recorded tap ends DEVICE_SIG; protocol
        faults (chaining, malformed answers, timeouts) replay as they happened.

Exit status: 0 done (upload: everything acknowledged), 1 failed, 2 usage.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from host_tools import journal_dump


class ReplayError(Exception):
    pass


def upload(journal, url, ca, cert, key, out=print):
    import httpx
    from host_tools.receiver import wire
    records, cursor, problems = journal_dump.read_journal(journal, 0)
    if not records:
        raise ReplayError("%s holds no records" % journal)
    ctx = httpx.create_ssl_context(verify=ca, cert=(cert, key))
    acked = 0
    after = records[0][0] - 1
    with httpx.Client(verify=ctx, timeout=30) as client:
        i = 0
        while i < len(records):
            batch, size = [], 30
            while i < len(records) and len(batch) < wire.MAX_COUNT and \
                    size + 6 + len(records[i][1]) <= wire.MAX_BODY:
                batch.append(records[i])
                size += 6 + len(records[i][1])
                i += 1
            body = wire.encode_upload(batch, after=after)
            try:
                r = client.post(url, content=body, headers={"Content-Type": "application/octet-stream"})
            except httpx.HTTPError as e:
                raise ReplayError("the receiver at %s did not answer (%s)" % (url, e))
            if r.status_code == 409 and r.json().get("error") == "gap":
                raise ReplayError("the receiver holds records only up to %d, and this journal starts "
                                  "at %d: the records between are not in it" % (r.json()["ack"], after + 1))
            if r.status_code != 200:
                raise ReplayError("the receiver refused a batch: %d %s" % (r.status_code, r.text[:300]))
            acked = r.json()["ack"]
            after = batch[-1][0]
            out("uploaded records %d..%d, receiver ack %d" % (batch[0][0], batch[-1][0], acked))
    if acked < records[-1][0]:
        raise ReplayError("the receiver acknowledged only up to %d of %d" % (acked, records[-1][0]))
    return acked


class RecordedPhone:
    """Answers each C-APDU with the next recorded R-APDU."""

    def __init__(self, exchanges):
        self.exchanges = list(exchanges)
        self.sent = []

    def transceive(self, capdu):
        self.sent.append(bytes(capdu))
        if not self.exchanges:
            return b"\x6f\x00"
        return bytes.fromhex(self.exchanges.pop(0)["r"])


def session(log, config, amount, workdir=None, out=print):
    from host_tools.emulator import Emulator
    exchanges = []
    for line in Path(log).read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("type") == "apdu":
            exchanges.append(e)
    if not exchanges:
        raise ReplayError("%s has no recorded APDU exchanges" % log)
    cfg = json.loads(Path(config).read_text())
    with tempfile.TemporaryDirectory() as d:
        emu = Emulator(workdir or d, cfg)
        emu.provision()
        emu.start()
        try:
            till = emu.till()
            phone = RecordedPhone(exchanges)
            till.send("CHARGE %d %d REPLAY1" % (amount, cfg["currency"]))
            emu.sim.add_phone(phone)
            result = till.read()
            till.close()
        finally:
            emu.stop()
    out("terminal: %s" % result)
    for i, c in enumerate(phone.sent):
        rec = exchanges[i]["c"] if i < len(exchanges) else "-"
        out("C-APDU %d sent %s recorded %s" % (i + 1, c.hex()[:40], rec[:40]))
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay replay", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 done, 1 failed, 2 usage")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("upload", help="re-upload a pulled journal to a receiver (safe twice)")
    u.add_argument("--journal", required=True, help="the journal partition's bytes (offpay logs --raw-journal)")
    u.add_argument("--url", required=True)
    u.add_argument("--ca", required=True, help="the acquirer CA (verifies the receiver)")
    u.add_argument("--cert", required=True, help="the terminal's client certificate")
    u.add_argument("--key", required=True, help="the terminal's client key")
    s = sub.add_parser("session", help="play recorded APDU exchanges through the emulated terminal")
    s.add_argument("--log", required=True, help="JSON lines from offpay logs")
    s.add_argument("--config", required=True, help="the terminal config to run with")
    s.add_argument("--amount", type=int, required=True, help="the charge, in cents")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "upload":
            upload(a.journal, a.url, a.ca, a.cert, a.key)
        else:
            session(a.log, a.config, a.amount)
    except (ReplayError, OSError, ValueError, RuntimeError) as e:
        print("replay failed: %s" % (e,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
