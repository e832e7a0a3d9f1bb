# Decline reason codes. The numbers go into journal records and uploads, the
# names onto the till link and the display; both are part of PROTOCOL.md.
from micropython import const

APPROVED = const(0)
MALFORMED = const(1)          # wallet answer does not parse
UNSUPPORTED = const(2)        # protocol version or algorithm we do not accept
ISSUER_UNKNOWN = const(3)     # no provisioned issuer key with that id
ISSUER_KEY_INVALID = const(4) # issuer key outside its validity window, or alg mismatch
ISSUER_SIG = const(5)         # credential signature does not verify
NOT_YET_VALID = const(6)      # terminal time before credential not-before
EXPIRED = const(7)            # terminal time after credential not-after
DENY_LISTED = const(8)        # wallet id or credential serial on the deny list
CURRENCY = const(9)           # credential currency differs from the charge
OVER_TAP_LIMIT = const(10)    # amount above the credential's per-tap limit
DEVICE_SIG = const(11)        # device signature over this tap does not verify
COUNTER_REPLAY = const(12)    # counter not above the last one seen from the wallet
OVER_OFFLINE_LIMIT = const(13)  # cumulative offline spend would exceed the limit
CAPACITY = const(14)          # terminal cannot track another wallet until it syncs
NO_WALLET = const(15)         # SELECT of our AID failed: not a wallet of ours
WALLET_ERROR = const(16)      # wallet answered AUTHORIZE with an error status word
PROTOCOL = const(17)          # APDU-level violation (chaining, lengths)
CARD_REMOVED = const(18)      # phone left the field mid-exchange
TIMEOUT = const(19)           # no phone presented before the charge timed out
STORAGE = const(20)           # record could not be written to flash: never approve
CANCELLED = const(21)         # the till cancelled the charge
READER = const(22)            # NFC reader failed and could not be recovered
BAD_AMOUNT = const(23)        # charge amount or currency rejected before any tap
CLOCK_UNSET = const(24)       # a terminal that has never had a trusted time takes no payment
OFFLINE_TOO_LONG = const(25)  # no sync for longer than risk.max_offline_age_s
SUPERSEDED = const(26)        # a newer credential of this wallet has paid here
CRED_HASH = const(27)         # the credential sent by reference is not the one its hash names

NAMES = (
    "APPROVED", "MALFORMED", "UNSUPPORTED", "ISSUER_UNKNOWN", "ISSUER_KEY_INVALID",
    "ISSUER_SIG", "NOT_YET_VALID", "EXPIRED", "DENY_LISTED", "CURRENCY",
    "OVER_TAP_LIMIT", "DEVICE_SIG", "COUNTER_REPLAY", "OVER_OFFLINE_LIMIT", "CAPACITY",
    "NO_WALLET", "WALLET_ERROR", "PROTOCOL", "CARD_REMOVED", "TIMEOUT", "STORAGE",
    "CANCELLED", "READER", "BAD_AMOUNT", "CLOCK_UNSET", "OFFLINE_TOO_LONG", "SUPERSEDED",
    "CRED_HASH",
)


def name(code):
    if 0 <= code < len(NAMES):
        return NAMES[code]
    return "UNKNOWN_%d" % code
