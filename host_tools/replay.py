"""`offpay replay`: re-upload a terminal's payments, and reproduce a field
problem on a desk.

    offpay replay upload --journal journal.bin --url https://receiver:8443/v1/upload \\
        --ca ca.pem --cert terminal.pem --key terminal-key.pem
        Re-uploads a pulled journal (`offpay logs --raw-journal journal.bin`)
        to a receiver as the terminal would (docs/upload.md). It first asks
        the receiver what it holds (an exchange with no records: its ack),
        then sends only the records above that ack, in batches. Running it
        again is a no-op: nothing is left above the ack, nothing is sent. A
        journal that starts above the ack + 1 is refused (the records between
        are not in it, and a batch would claim they do not exist). The client
        certificate's CN must be the journal's terminal id.

    offpay replay session --log logs.jsonl --config cfg.json [--tap N] [--list]
        Plays the recorded NFC session (`offpay logs` "apdu" lines: the
        terminal's recent exchanges and its TAP lines, pos.apdulog) back
        through the emulated terminal, one recorded tap at a time, in order
        from the oldest (also before the tap asked for: the terminal then
        holds what the field's held from them, e.g. the credentials wallets
        later send by reference, PROTOCOL.md 5.7): a phone
        answers each command with the recorded response, in order, and stays
        silent where the field's phone did ("AUTHORIZE not answered"). The
        emulated terminal's clock is set to the recorded AUTHORIZE's time, and
        the charge is the recorded amount and currency. Each tap's replayed
        outcome is compared with the field's.

        What replays: everything the exchange decides, in the rules' order up
        to the device signature (protocol violations, a silent phone, wallet
        errors, an unknown or invalid issuer key, a forged credential,
        validity at the recorded time, deny list, currency, per-tap limit). A
        genuine signature does not: it signed the field terminal's fresh
        challenge, not the replay's, so a tap APPROVED in the field replays
        as DEVICE_SIG, and so do outcomes decided after the signature from
        the terminal's history (COUNTER_REPLAY, OVER_OFFLINE_LIMIT,
        SUPERSEDED, CAPACITY). These count as consistent. Nor does what the
        field terminal held from before the log's first tap (its cache of
        credentials, wallets' counters): a tap whose commands then differ
        from the recording's (e.g. AUTHORIZE asking for the credential by
        reference or not) is reported with the command that diverged.

Exit status: 0 done (upload: the receiver holds every record; session: every
tap replayed consistently), 1 failed or a tap replayed differently, 2 usage.
"""
import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from host_tools import journal_dump
from host_tools import wallet_sim as ws

SELECT_INS = 0xA4
# Decided after the device signature, from what the terminal remembers: a
# replay, whose recorded signature answers another challenge, ends before.
AFTER_SIGNATURE = ("APPROVED", "COUNTER_REPLAY", "OVER_OFFLINE_LIMIT", "SUPERSEDED", "CAPACITY")
_OUTCOME = re.compile(r"^TAP ([A-Z_]+)(,| ref=(\S*))")
_SILENT = re.compile(r"^TAP AUTHORIZE not answered")


class ReplayError(Exception):
    pass


# -- upload ---------------------------------------------------------------------

def _cert_terminal(cert):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    try:
        c = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    except ValueError as e:
        raise ReplayError("client certificate %s is not a PEM certificate (%s)" % (cert, e))
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cn[0].value.lower() if cn else None


def _journal_terminal(records):
    from host_tools.records import RecordError, parse_record
    for _, payload in records:
        try:
            return parse_record(payload)["terminal_id"].hex()
        except (RecordError, KeyError, IndexError, ValueError):
            continue
    return None


def _post(client, url, batch, after):
    import httpx
    from host_tools.receiver import wire
    body = wire.encode_upload(batch, after=after)
    try:
        r = client.post(url, content=body, headers={"Content-Type": "application/octet-stream",
                                                    "Connection": "close"})
    except httpx.HTTPError as e:
        raise ReplayError("the receiver at %s did not answer (%s)" % (url, e))
    try:
        answer = r.json()
    except ValueError:
        answer = {}
    if r.status_code == 409 and answer.get("error") == "gap":
        raise ReplayError("the receiver holds records only up to %s, below this batch's start %d"
                          % (answer.get("ack"), after + 1))
    if r.status_code != 200 or not isinstance(answer.get("ack"), int):
        raise ReplayError("the receiver refused a batch: %d %s" % (r.status_code, r.text[:300]))
    return answer["ack"]


def batches(records):
    """Upload batches within the protocol's limits (docs/upload.md section 2)."""
    from host_tools.receiver import wire
    out, batch, size = [], [], 30
    for rec in records:
        if batch and (len(batch) == wire.MAX_COUNT or size + 6 + len(rec[1]) > wire.MAX_BODY):
            out.append(batch)
            batch, size = [], 30
        batch.append(rec)
        size += 6 + len(rec[1])
    if batch:
        out.append(batch)
    return out


def upload(journal, url, ca, cert, key, out=print, progress=None):
    """(receiver's ack, records sent). ReplayError names what went wrong."""
    import httpx
    try:
        records, cursor, problems = journal_dump.read_journal(journal, 0)
    except ValueError as e:
        raise ReplayError(str(e))
    if not records:
        raise ReplayError("%s holds no records" % journal)
    for p in problems:
        out("journal: %s" % p)
    tid, cn = _journal_terminal(records), _cert_terminal(cert)
    if tid is not None and cn != tid:
        raise ReplayError("the journal is terminal %s's, the client certificate is %s's: the receiver "
                          "would file these payments under the wrong terminal" % (tid, cn))
    import ssl
    try:
        # Mutual TLS as the terminal does it: the acquirer CA pinned, the
        # terminal's certificate presented.
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ValueError, ssl.SSLError) as e:
        raise ReplayError("TLS files (--ca, --cert, --key): %s" % (e,))
    first, last = records[0][0], records[-1][0]
    with httpx.Client(verify=ctx, timeout=30) as client:
        ack = _post(client, url, [], 0)  # no records: what the receiver already holds
        if ack >= last:
            out("nothing to upload: the receiver holds every record up to %d (this journal: %d..%d)"
                % (ack, first, last))
            return ack, 0
        if ack < first - 1:
            raise ReplayError("the receiver holds records only up to %d, and this journal starts at %d: "
                              "records %d..%d are not in it" % (ack, first, ack + 1, first - 1))
        todo = [r for r in records if r[0] > ack]
        sent, after = 0, ack
        for batch in batches(todo):
            ack = _post(client, url, batch, after)
            after = batch[-1][0]
            sent += len(batch)
            if progress:
                progress(sent, len(todo))
            out("uploaded records %d..%d, receiver ack %d" % (batch[0][0], batch[-1][0], ack))
    if ack < last:
        raise ReplayError("the receiver acknowledged only up to %d of %d" % (ack, last))
    return ack, sent


# -- session --------------------------------------------------------------------

def taps(entries):
    """The recorded taps of an APDU log, oldest first: each starts with a
    SELECT and holds its exchanges [(c, r) bytes], the field's outcome (the
    terminal's TAP line for it, or None when the log lost it) and whether the
    phone went silent after the last recorded exchange."""
    out = []
    for e in entries:
        if "note" in e:
            if out and out[-1]["field"] is None:
                note = e["note"]
                if _SILENT.match(note):
                    out[-1]["silent"] = True
                m = _OUTCOME.match(note)
                if m:
                    out[-1]["field"] = m.group(1)
            continue
        try:
            c, r = bytes.fromhex(e["c"]), bytes.fromhex(e["r"])
        except (KeyError, TypeError, ValueError):
            continue
        if len(c) > 1 and c[1] == SELECT_INS or not out or out[-1]["field"] is not None:
            out.append({"exchanges": [], "field": None, "silent": False})
        out[-1]["exchanges"].append((c, r))
    # A tap the ring cut at its start (no SELECT) cannot be replayed from the start.
    return [t for t in out if t["exchanges"] and t["exchanges"][0][0][1:2] == bytes((SELECT_INS,))]


def _authorize(tap):
    """(amount, currency, time) of the tap's recorded AUTHORIZE, or None."""
    from host_tools.records import REQUEST_SPEC, RecordError, fields
    for c, _ in tap["exchanges"]:
        if len(c) > 5 and c[1] == 0xA0:
            try:
                f = fields(c[5:5 + c[4]], REQUEST_SPEC, "AUTHORIZE")
            except RecordError:
                return None
            u = lambda b: int.from_bytes(b, "big")  # noqa: E731
            return u(f[0x24]), u(f[0x25]), u(f[0x27])
    return None


def _answer(tap):
    """(index of the AUTHORIZE exchange, its P1, the answer's data across its
    parts, whether the recording reads it to 90 00), or None."""
    ex = tap["exchanges"]
    for i, (c, r) in enumerate(ex):
        if len(c) > 4 and c[1] == 0xA0:
            data, k = b"", i
            while k < len(ex):
                resp = ex[k][1]
                data += resp[:-2]
                if resp[-2:-1] != b"\x61" or k + 1 >= len(ex) or ex[k + 1][0][1:2] != b"\xc0":
                    return i, c[2], data, resp[-2:] == b"\x90\x00"
                k += 1
            return i, c[2], data, False
    return None


def _version1(data):
    """The version-1 answer (31 credential | 32 | 33 | 34) that an answer by
    reference (32 | 33 | 34 | 35 hash | 36 credential, PROTOCOL.md 5.7)
    stands for, or None when it is not a whole, consistent one."""
    import hashlib
    try:
        f = ws.parse_tlv(data)
    except (ws.TLVError, IndexError):
        return None
    if sorted(f) != [0x32, 0x33, 0x34, 0x35, 0x36] or hashlib.sha256(f[0x36]).digest() != f[0x35]:
        return None
    return ws.tlv(0x31, f[0x36]) + ws.tlv(0x32, f[0x32]) + ws.tlv(0x33, f[0x33]) + ws.tlv(0x34, f[0x34])


class RecordedPhone:
    """Answers the terminal's commands with one recorded tap's responses, in
    order. After the last recorded exchange it does what the field's
    terminal saw next: silence (the reader acknowledges the next command and
    never answers it: PN532Sim.silence) where the terminal said "AUTHORIZE
    not answered", the phone leaving the field where the attempt ended
    CARD_REMOVED, and otherwise an error status (6F00): the terminal asked
    for more than the recording holds.

    Credential by reference (PROTOCOL.md 5.7) depends on what the terminal
    holds, so the replay's terminal may ask otherwise than the field's. The
    phone then answers as the recorded wallet would by that section, from
    the recorded answer: a SELECT without option 81 when the field's
    AUTHORIZE asked for the version-1 answer (P1 00); the version-1 answer
    (from a whole answer by reference, credential included) when the field's
    asked by reference and the replay's cannot (it holds no credential yet)."""

    def __init__(self, tap, sim):
        self.script = list(tap["exchanges"])
        self.silent = tap["silent"]
        self.leaves = tap["field"] == "CARD_REMOVED"
        self.sim = sim
        self.sent = []
        self.diverged = None  # (index, sent header, recorded header) at the first difference
        self.v1 = None        # the version-1 answer being sent in parts, when converted
        self.answer = _answer(tap)

    def transceive(self, capdu):
        capdu = bytes(capdu)
        i = len(self.sent)
        self.sent.append(capdu)
        if self.v1 is not None:
            return self._part(capdu)
        if i >= len(self.script):
            if self.leaves:
                self.sim.remove_phone(self)
                raise ConnectionError("the recorded phone left the field here")  # the reader: target lost
            if self.diverged is None:
                self.diverged = (i, capdu[:4].hex(), "-")
            return b"\x6f\x00"
        c, r = self.script[i]
        if c[1:2] == bytes((SELECT_INS,)) and self.answer and self.answer[1] == 0 and len(r) > 3:
            # The field's terminal asked for the version-1 answer: the option is
            # not offered, so the replay's asks the same.
            opts = bytes(x for x in r[2:-2] if x != 0x81)
            r = bytes((r[0], len(opts))) + opts + r[-2:]
        if self.answer and i == self.answer[0] and capdu[1:2] == b"\xa0" and capdu[2] == 0 \
                and self.answer[1] == 1 and self.answer[3]:
            v1 = _version1(self.answer[2])
            if v1 is not None:
                self.v1 = v1
                return self._part(capdu)
        if self.diverged is None and capdu[:4] != c[:4]:
            # The command's header (class, instruction, P1, P2): the data of
            # AUTHORIZE differs anyway (a fresh challenge, the time).
            self.diverged = (i, capdu[:4].hex(), c[:4].hex())
        if i == len(self.script) - 1 and self.silent:
            self.sim.silence(1, ack=True)  # the command after this answer gets none
        return r

    def _part(self, capdu):
        le = capdu[-1] or 256 if len(capdu) > 4 else 256
        out, self.v1 = self.v1[:min(le, ws.CHUNK)], self.v1[min(le, ws.CHUNK):]
        if self.v1:
            return out + bytes((0x61, len(self.v1) if len(self.v1) < 256 else 0))
        self.v1 = None
        return out + ws.SW_OK


def consistent(field, replayed):
    return field is None or field == replayed or (field in AFTER_SIGNATURE and replayed == "DEVICE_SIG")


def session(log, config, which=None, amount=None, out=print, workdir=None):
    """[(tap number, field outcome, replayed outcome)] of the replayed taps."""
    from host_tools import emulator
    from host_tools.pn532_sim import PN532Sim
    entries = []
    for line in Path(log).read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("type") == "apdu":
            entries.append(e)
    recorded = taps(entries)
    if not recorded:
        raise ReplayError("%s has no recorded tap (no apdu lines starting with a SELECT)" % log)
    if which is not None and not 1 <= which <= len(recorded):
        raise ReplayError("the log holds taps 1..%d, not %d" % (len(recorded), which))
    # In order from the oldest, also before the one asked for: the terminal
    # then holds what the field's held from them (the wallets' counters and
    # the credentials a wallet later sends by reference, PROTOCOL.md 5.7).
    upto = which or len(recorded)
    try:
        cfg = json.loads(Path(config).read_text())
    except (OSError, ValueError) as e:
        raise ReplayError("config %s: %s" % (config, e))
    results = []
    with tempfile.TemporaryDirectory() as d:
        emu = emulator.Emulator(workdir or d, cfg, sim=PN532Sim())
        emu.seed_clock = False
        emu.provision()
        first = _authorize(recorded[0]) or _authorize(recorded[upto - 1])
        with emu.repl() as url:
            # The recorded time: validity is judged as it was in the field.
            emu.set_clock(url, first[2] if first else int(time.time()))
        emu.start()
        try:
            till = emu.till()
            for k in range(1, upto + 1):
                tap = recorded[k - 1]
                auth = _authorize(tap)
                amt = amount if amount is not None else (auth[0] if auth else 100)
                cur = auth[1] if auth else cfg.get("currency", 978)
                got = _replay_one(emu, till, tap, amt, cur, "REPLAY%d" % k)
                phone = got[1]
                if which is not None and k != which:
                    continue
                results.append((k, tap["field"], got[0]))
                verdict = "consistent" if consistent(tap["field"], got[0]) else "DIFFERS"
                out("tap %d: field %s, replay %s: %s" % (k, tap["field"] or "(not in the log)", got[0],
                                                         verdict))
                if phone.diverged is not None:
                    i, sent, rec = phone.diverged
                    held = phone.answer and phone.answer[1] == 1 and not phone.answer[3]
                    out("  command %d diverged: the replay sent %s, the field %s%s"
                        % (i + 1, sent, rec, " (the field's terminal held this wallet's credential "
                           "from before the recorded taps and read only its hash: the replay "
                           "cannot decide without it)" if held else ""))
            till.close()
        finally:
            emu.stop()
    return results


def _replay_one(emu, till, tap, amount, currency, ref):
    n = len(emu.lines)
    phone = RecordedPhone(tap, emu.sim)
    till.send("CHARGE %d %d %s" % (amount, currency, ref))
    emu.sim.add_phone(phone)
    outcome = final = None
    deadline = time.monotonic() + 30
    while outcome is None and time.monotonic() < deadline:
        for line in emu.lines[n:]:
            m = _OUTCOME.match(line)
            # (The last charge's own line may still be on its way from the
            # emulator's stdout: a decision counts only with this ref.)
            if m and (m.group(2) == "," or m.group(3) == ref):
                outcome, final = m.group(1), m.group(2) != ","
                break
        time.sleep(0.01)
    emu.sim.remove_phone(phone)
    emu.sim.clear_faults()
    # A retried attempt (PROTOCOL, CARD_REMOVED) leaves the charge running:
    # end it. Every CHARGE gets one RESULT, and the CANCEL its own answer
    # (CANCELLED or ERR), in either order.
    till.send("CANCEL")
    result = answer = None
    while result is None or answer is None:
        line = till.read()
        if line.startswith("RESULT %s " % ref):
            result = line
        elif line.startswith("CANCELLED") or line.startswith("ERR"):
            answer = line
    if final:
        # A decision: the terminal watches the field until it has been empty
        # for removal_ms; the next phone must not arrive before that.
        emu.wait_for("FIELD clear", n, timeout=10)
    if outcome is None:
        raise ReplayError("the emulated terminal said nothing about tap %s within 30 s" % ref)
    return outcome, phone


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay replay", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 done, 1 failed or replayed differently, 2 usage")
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("upload", help="re-upload a pulled journal to a receiver (a second run sends nothing)",
                       epilog="exit status: 0 the receiver holds every record, 1 failed, 2 usage")
    u.add_argument("--journal", required=True, help="the journal partition's bytes (offpay logs --raw-journal)")
    u.add_argument("--url", required=True, help="the receiver's upload URL (https://.../v1/upload)")
    u.add_argument("--ca", required=True, help="the acquirer CA (verifies the receiver)")
    u.add_argument("--cert", required=True, help="the terminal's client certificate (PEM)")
    u.add_argument("--key", required=True, help="the terminal's client key (PEM)")
    s = sub.add_parser("session", help="play recorded APDU exchanges through the emulated terminal",
                       epilog="exit status: 0 every tap replayed consistently, 1 failed or differs, 2 usage")
    s.add_argument("--log", required=True, help="JSON lines from offpay logs")
    s.add_argument("--config", required=True, help="the terminal config to run with")
    s.add_argument("--tap", type=int, help="replay only this recorded tap (1 = oldest; see --list)")
    s.add_argument("--list", action="store_true", help="list the recorded taps and stop")
    s.add_argument("--amount", type=int, help="charge this instead of the recorded amount (cents)")
    a = ap.parse_args(argv)
    from host_tools.progress import bar
    try:
        if a.cmd == "upload":
            with bar("upload", None, unit="records") as advance:
                upload(a.journal, a.url, a.ca, a.cert, a.key, progress=advance)
            return 0
        if a.list:
            entries = [json.loads(l) for l in Path(a.log).read_text().splitlines() if l.strip()]
            for k, t in enumerate(taps([e for e in entries if e.get("type") == "apdu"]), 1):
                auth = _authorize(t)
                print("tap %d: %d exchanges%s, field %s%s" % (
                    k, len(t["exchanges"]), ", then silence" if t["silent"] else "",
                    t["field"] or "(not in the log)",
                    ", %d.%02d at %d" % (auth[0] // 100, auth[0] % 100, auth[2]) if auth else ""))
            return 0
        results = session(a.log, a.config, a.tap, a.amount)
    except (ReplayError, OSError, ValueError, RuntimeError) as e:
        print("replay failed: %s" % (e,), file=sys.stderr)
        return 1
    return 0 if all(consistent(f, r) for _, f, r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
