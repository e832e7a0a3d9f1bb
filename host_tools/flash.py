"""`offpay flash --port PORT [--image MICROPYTHON.bin]`: make an ESP32 a
terminal, in this order:

  1. the stock MicroPython ESP32 release image (the merged .bin written at
     0x1000) with esptool's Python API, checked first: an image for another
     chip (ESP32-S3, C3, ...) is refused before anything is written;
  2. the project's partition table (boards/esp32/partitions.csv, binary at
     0x8000) with its `journal` partition. The table keeps an explicit `vfs`
     partition: MicroPython >= 1.26 creates `vfs` at run time from the end of
     the last partition to the end of flash only when the table has none, and
     older releases need it in the table, so this one layout means the same on
     every release from 1.20 on. A board whose table differs gets its `vfs`
     and `journal` regions erased, unless the journal region holds a journal
     (stored payments): then the tool stops, unless --erase-journal;
  3. the built firmware (offpay build --board esp32: build/esp32 and its
     manifest) copied with mpremote's transport, each file atomically, only
     the files whose SHA-256 on the device differs (re-flashing copies only
     what changed; esptool's skip_flashed does the same for the image);
  4. every file on the device verified by hash against the manifest;
  5. a reset: the terminal boots the new firmware.

`--files-only` skips 1-2 (an ESP32 that already runs MicroPython with this
table, or the emulated terminal: `--board unix` copies build/unix).
Exit status: 0 flashed and verified, 1 failed, 2 usage.
"""
import argparse
import sys
import time
from pathlib import Path

from host_tools import device, partitions
from host_tools.build import ROOT, BuildError, build, load_manifest

BOOTLOADER_OFFSET = 0x1000
_CHIP_IDS = {0x00: "ESP32", 0x02: "ESP32-S2", 0x05: "ESP32-C3", 0x09: "ESP32-S3", 0x0C: "ESP32-C2",
             0x0D: "ESP32-C6", 0x10: "ESP32-H2", 0x12: "ESP32-P4", 0x17: "ESP32-C5"}


class FlashError(Exception):
    pass


def check_image(path):
    """The image's bytes, if it is an ESP32 firmware image to write at 0x1000."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FlashError("image %s: %s" % (path, e.strerror or e))
    if len(data) < 0x9000 or data[0] != 0xE9:
        raise FlashError("%s is not an ESP firmware image (no E9 header): use the .bin of a "
                         "MicroPython ESP32_GENERIC release" % path)
    chip = data[12] | data[13] << 8
    if chip != 0:
        raise FlashError("%s is an image for the %s, not the ESP32" % (path, _CHIP_IDS.get(chip, "chip %d" % chip)))
    return data


class _Progress:
    """esptool's progress reports into a rich bar (and its messages to stderr)."""

    def __init__(self, out):
        from esptool.logger import TemplateLogger
        self.out = out

        class L(TemplateLogger):
            def print(self, *a, **k):
                out(" ".join(str(x) for x in a))

            def note(self, m):
                out("note: %s" % m)

            def warning(self, m):
                out("warning: %s" % m)

            def error(self, m):
                out("error: %s" % m)

            def stage(self, finish=False):
                pass

            def progress_bar(self_, cur, total, prefix="", suffix="", bar_length=30):
                self.update(cur, total, prefix)

            def set_verbosity(self, v):
                pass

        self.logger = L()
        self._bar = None
        self._cm = None

    def update(self, cur, total, prefix):
        from host_tools.progress import bar
        if self._bar is None:
            self._cm = bar(prefix.strip() or "flash", total)
            self._bar = self._cm.__enter__()
        self._bar(cur)
        if cur >= total:
            self.close()

    def close(self):
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._bar = self._cm = None


_installed = []


def _install(prog):
    """Route esptool's log to `prog` (esptool's logger can be set once: after
    that its proxy no longer offers set_logger)."""
    from esptool.logger import log
    if not _installed:
        router = _Progress.__new__(_Progress)
        _Progress.__init__(router, lambda m: _installed[1].out(m))
        router.update = lambda cur, total, prefix: _installed[1].update(cur, total, prefix)
        log.set_logger(router.logger)
        _installed.append(router)
        _installed.append(prog)
    _installed[1] = prog


def _journal_there(esp, part):
    from esptool.cmds import read_flash
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        read_flash(esp, part.offset, 4096, f.name)
        head = Path(f.name).read_bytes()[:4]
    return head == b"PJL1"


def write_image(port, image, out=print, stub=True, connect_mode="default-reset", erase_journal=False):
    """Steps 1 and 2 with esptool; returns nothing, FlashError on failure."""
    from esptool.cmds import attach_flash, detect_chip, read_flash, reset_chip, run_stub, write_flash
    from esptool.util import FatalError
    import tempfile
    parts, table = partitions.project_table()
    prog = _Progress(out)
    _install(prog)
    esp = None
    try:
        try:
            esp = detect_chip(port, connect_mode=connect_mode, connect_attempts=3)
        except (FatalError, OSError) as e:
            raise FlashError("no ESP32 answers on %s (%s): is it plugged in, and in download mode?"
                             % (port, str(e).split("\n")[0]))
        if esp.CHIP_NAME != "ESP32":
            raise FlashError("%s is an %s: this terminal is built for the ESP32" % (port, esp.CHIP_NAME))
        if stub:
            esp = run_stub(esp)
        attach_flash(esp)
        with tempfile.NamedTemporaryFile() as f:
            read_flash(esp, partitions.OFFSET, partitions.MAX_LEN, f.name)
            current = Path(f.name).read_bytes()
        same = current == table
        if not same:
            journal = partitions.find(parts, "journal")
            if _journal_there(esp, journal) and not erase_journal:
                raise FlashError("the board's journal partition holds payments and its partition "
                                 "table differs: pull them first (offpay logs), then flash again "
                                 "with --erase-journal")
        at = partitions.OFFSET - BOOTLOADER_OFFSET
        if image is not None and len(image) >= at + partitions.MAX_LEN:
            # A merged release image carries its own table at 0x8000: put ours
            # in its place, so the flash then matches the file and a re-flash
            # (esptool's skip_flashed, an MD5 per region) writes nothing.
            image = image[:at] + table + image[at + len(table):]
            writes = [(BOOTLOADER_OFFSET, image)]
        else:
            writes = [(BOOTLOADER_OFFSET, image)] if image is not None else []
            writes.append((partitions.OFFSET, table))
        if not same:
            # A new layout: the file system and journal regions start erased,
            # so neither the old vfs nor stale bytes are taken for a journal.
            for name in ("vfs", "journal"):
                p = partitions.find(parts, name)
                writes.append((p.offset, b"\xff" * p.size))
        write_flash(esp, writes, skip_flashed=True)
        out("image and partition table written%s" % ("" if same else "; vfs and journal erased"))
        reset_chip(esp, "hard-reset")
    except FatalError as e:
        raise FlashError("esptool: %s" % (str(e).split("\n")[0],))
    except OSError as e:
        raise FlashError("%s stopped answering (%s)" % (port, e))
    finally:
        prog.close()
        if esp is not None:
            try:
                esp._port.close()
            except OSError:
                pass


def copy_firmware(port, board, out=print, reset=True):
    """Steps 3-5: copy what changed, verify everything, reset. Returns
    (copied, verified) file counts."""
    try:
        bdir = build(board)
    except BuildError as e:
        raise FlashError(str(e))
    manifest = load_manifest(bdir)
    files = manifest["files"]
    from host_tools.progress import bar
    with device.Session(port) as s:
        lib = s.paths["lib"]
        dest = {rel: (s.paths["main"] if rel == "main.py" else lib + "/" + rel) for rel in files}
        s.exec("import os\ndef _mk(p):\n try:\n  os.mkdir(p)\n except OSError:\n  pass\n"
               "_mk(%r)\n_mk(%r)" % (lib, lib + "/pos"))
        have = {}
        for rel in files:
            have[rel] = s.sha256(dest[rel])
        todo = [rel for rel in files if have[rel] != files[rel]]
        total = sum((bdir / rel).stat().st_size for rel in todo)
        done = 0
        with bar("copy", total) as advance:
            for rel in todo:
                data = (bdir / rel).read_bytes()
                base = done
                s.put(dest[rel], data, progress=lambda n: advance(base + n))
                done += len(data)
        bad = [rel for rel in files if s.sha256(dest[rel]) != files[rel]]
        if bad:
            raise FlashError("files differ on the device after copying: %s" % ", ".join(bad))
        out("firmware %s: %d files copied, %d verified by SHA-256" % (manifest["version"], len(todo), len(files)))
        if reset:
            if s.board == "esp32":
                s.t.exec_raw_no_follow("import machine\nmachine.reset()")
            else:
                # The emulated board's reset (pos.service.RESET_EXIT): offpay emulate boots it again.
                s.t.exec_raw_no_follow("raise SystemExit(80)")
    return len(todo), len(files)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay flash", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 flashed and verified, 1 failed, 2 usage")
    ap.add_argument("--port", required=True, help="the board's serial port")
    ap.add_argument("--image", help="a stock MicroPython ESP32 release image (.bin, written at 0x1000)")
    ap.add_argument("--board", choices=("esp32", "unix"), default="esp32")
    ap.add_argument("--files-only", action="store_true", help="only copy and verify the firmware files")
    ap.add_argument("--erase-journal", action="store_true",
                    help="allow a new partition table to erase a journal that holds payments")
    ap.add_argument("--no-stub", action="store_true", help="talk to the ROM loader only (slow)")
    ap.add_argument("--connect-mode", default="default-reset",
                    choices=("default-reset", "usb-reset", "no-reset", "no-reset-no-sync"))
    a = ap.parse_args(argv)
    if a.board == "unix" and not a.files_only:
        ap.error("--board unix has no image or partition table: add --files-only")
    try:
        if not a.files_only:
            image = check_image(a.image) if a.image else None
            write_image(a.port, image, stub=not a.no_stub, connect_mode=a.connect_mode,
                        erase_journal=a.erase_journal)
            time.sleep(2)  # MicroPython's first boot formats the file system
        copy_firmware(a.port, a.board)
    except (FlashError, device.DeviceError) as e:
        print("flash failed: %s" % (e,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
