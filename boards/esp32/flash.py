"""Where the journal lives on the ESP32: a raw data partition.

    part = flash.setup(label="journal")

The partition table needs a data partition labelled `label`, e.g.
`journal, data, 0x82, , 1M` (boards/esp32/partitions.csv). pos.journal writes
it raw: records are programmed into blocks it erased beforehand, so an
approval costs a program op, not a littlefs block copy and erase. Keeping
payments off the code/config file system ("/", littlefs on the `vfs`
partition) also means a firmware or config update never competes with them
for space, and a reformat of "/" never touches them.

No such partition: JournalSetupError. There is no fallback onto "/": a
terminal that cannot store payments must not take them.
"""


class JournalSetupError(OSError):
    pass


def setup(label="journal"):
    import esp32

    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
    if not found:
        raise JournalSetupError("no '%s' data partition: flash the partition table "
                                "in boards/esp32/partitions.csv" % label)
    return found[0]
