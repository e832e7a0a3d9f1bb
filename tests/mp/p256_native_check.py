# The native P-256 field engine (pos.p256_viper) against big-int arithmetic:
# every op on edge values (0, 1, p - 1, p, values >= p as hostile points give,
# all-ones limbs) and random ones, the point programs against the mpz formulas,
# and the degenerate-addition fallback. Run by tests/test_p256_native.py in the
# unix port (64-bit words) and by bench/esp32 in the 32-bit emulation; prints
# "CHECK <n> values, <m> mismatches" and exits non-zero on a mismatch.
import hashlib
import sys

from pos import p256, p256_native as nat, p256_viper as fe

P = p256._P
M256 = (1 << 256) - 1
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5

if p256.use("native") != "native":
    print("CHECK native backend not available")
    sys.exit(2)

count = [0]


class Bad(list):
    # The first few mismatches, and how many there were.
    n = 0

    def append(self, what):
        self.n += 1
        if len(self) < 10:
            list.append(self, what)


bad = Bad()


def check(what, got, want, canonical=False):
    count[0] += 1
    if got >> 256 or got % P != want % P or (canonical and got >= P):
        bad.append("%s: got %x want %x" % (what, got, want % P))


_seed = [0]


def rand256():
    # Deterministic (the emulated board has no os.urandom): SHA-256 of a counter.
    _seed[0] += 1
    return int.from_bytes(hashlib.sha256(b"p256 check %d" % _seed[0]).digest(), "little")


EDGE = [0, 1, 2, 3, P - 2, P - 1, P, P + 1, P + 2, M256, M256 - 1, M256 - P, (M256 - P) - 1,
        1 << 255, 1 << 224, (1 << 224) - 1, 1 << 192, 1 << 96, (1 << 96) - 1, 0xFFFF, 0xFFFF << 240,
        M256 ^ (0xFFFF << 112), M256 ^ 1, 0x5555 * (M256 // 0xFFFF), 2 * P - M256 - 1]
for i in range(16):
    EDGE.append(M256 ^ (0xFFFF << (16 * i)))  # all-ones limbs but one
VALUES = EDGE + [rand256() for _ in range(24)] + [rand256() % P for _ in range(8)]

op = nat._op
ops = {
    "mul": op(fe.OP_MUL, 0, 5, 6) + op(fe.OP_RED, 7, 1),
    "sqr": op(fe.OP_SQR, 0, 5) + op(fe.OP_RED, 7, 1),
    "lin": op(fe.OP_LIN, 7, 0, 0, 8, 5, -8, 6),
    "lin1": op(fe.OP_LIN, 7, 0, 0, -1, 5),
    # COMB at its bound (|b| + |c| = 9), both fused terms and the plain RED.
    "comb": (op(fe.OP_MUL, 0, 5, 6) + op(fe.OP_SQR, 1, 6) + op(fe.OP_COMB, 0, 1, -8)
             + op(fe.OP_RED, 7, 0, 0, -2, 5, 7, 6)),
    "comb2": (op(fe.OP_SQR, 0, 5) + op(fe.OP_MUL, 1, 6, 5) + op(fe.OP_COMB, 0, -3, -6)
              + op(fe.OP_RED, 7, 0, 0, -8, 5, -8, 6)),
    "comb3": op(fe.OP_MUL, 0, 5, 6) + op(fe.OP_SQR, 1, 6) + op(fe.OP_COMB, 0, 8, 1) + op(fe.OP_RED, 7),
    "red1": op(fe.OP_MUL, 0, 5, 6) + op(fe.OP_RED, 7, 0, 0, 8, 5),
    "can": op(fe.OP_LIN, 7, 0, 0, 1, 5) + op(fe.OP_CAN, 7),
}
want = {
    "mul": lambda a, b: a * b,
    "sqr": lambda a, b: a * a,
    "lin": lambda a, b: 8 * a - 8 * b,
    "lin1": lambda a, b: -a,
    "comb": lambda a, b: a * b - 8 * b * b - 2 * a + 7 * b,
    "comb2": lambda a, b: -3 * a * a - 6 * a * b - 8 * a - 8 * b,
    "comb3": lambda a, b: 8 * a * b + b * b,
    "red1": lambda a, b: a * b + 8 * a,
    "can": lambda a, b: a,
}
blob = b""
where = {}
for name in ops:
    where[name] = (fe.PROG_OFF + len(blob), len(blob))
    blob += ops[name] + bytes(8)
ws = bytearray(fe.PROG_OFF + len(blob))
ws[fe.PROG_OFF:] = blob


def put(slot, v):
    o = fe.SLOTS_OFF + 32 * slot
    ws[o:o + 32] = v.to_bytes(32, "little")


def get(slot):
    o = fe.SLOTS_OFF + 32 * slot
    return int.from_bytes(ws[o:o + 32], "little")


for a in VALUES:
    for b in VALUES[::3] + [a]:
        put(5, a)
        put(6, b)
        for name in ops:
            fe.run(where[name][1] | 1 << 16, ws)
            check("%s(%x, %x)" % (name, a, b), get(7), want[name](a, b), name == "can")

# Point programs against the mpz formulas, on coordinates that need not be
# reduced (a hostile table or a lazy accumulator gives such values).


def aff(X, Y, Z):
    zi = p256._inv(Z % P, P)
    return X * zi * zi % P, Y * zi * zi * zi % P


def madd(X, Y, Z, x2, y2):
    zz = Z * Z % P
    h = x2 * zz - X
    rr = y2 * Z * zz - Y
    hh = h * h % P
    hhh = h * hh % P
    v = X * hh % P
    X3 = (rr * rr - hhh - 2 * v) % P
    return X3, (rr * (v - X3) - Y * hhh) % P, Z * h % P


def prog(name, *vals):
    w = nat._ws
    for s, v in enumerate(vals):
        o = fe.SLOTS_OFF + 32 * s
        w[o:o + 32] = v.to_bytes(32, "little")
    fe.run(nat._prog[name], w)
    return [int.from_bytes(w[fe.SLOTS_OFF + 32 * s:fe.SLOTS_OFF + 32 * s + 32], "little") for s in range(3)]


# The formulas are identities in the field, so any coordinates do: random
# 256-bit ones and edge values (a Z that is 0 mod p has no affine form: skipped).
for i in range(12):
    X, Y, Z, x2, y2 = [rand256() if (i + j) % 4 else EDGE[(5 * i + j) % len(EDGE)] for j in range(5)]
    if Z % P == 0:
        Z = M256
    r = prog("dbl", X, Y, Z)
    count[0] += 1
    if aff(*r[:3]) != aff(*p256._double_n(X % P, Y % P, Z % P, 1)):
        bad.append("dbl %d" % i)
    for name, sy in (("add", y2), ("sub", -y2)):
        r = prog(name, X, Y, Z, x2, y2)
        want = madd(X, Y, Z, x2, sy)
        count[0] += 1
        if (want[2] % P == 0) != (r[2] % P == 0) or want[2] % P and aff(*r[:3]) != aff(*want):
            bad.append("%s %d" % (name, i))

# The inverse (Bernstein-Yang), mod p and mod n, on the same values; 0 mod m
# has none: inverse() answers None and p256._inv raises.
N = p256._N
for m in (P, N):
    for a in VALUES:
        count[0] += 1
        x = nat.inverse(a, m)
        if a % m == 0:
            if x is not None:
                bad.append("inverse(%x) of 0 mod m: %r" % (a, x))
        elif x is None or x * a % m != 1 or not 0 <= x < m:
            bad.append("inverse(%x, %x) = %r" % (a, m, x))
count[0] += 1
try:
    p256._inv(P, P)
    bad.append("_inv(p, p) did not raise")
except ValueError:
    pass

# The schedule (wnaf + order) against pos.p256._schedule, for every parameter
# set the verifier uses, on edge scalars and random ones.
import struct

ws2 = nat._ws
E0 = fe.LOOP_OFF + 96
PARAMS = [(7, 1 << 9, 1 << 9, 32, 8), (4, 0, 4, 32, 8), (5, 0, 8, 32, 8), (4, 0, 4, 64, 4),
          (7, 1 << 9, 0, 1024, 1), (4, 0, 0, 1024, 1)]
for u in [1, 2, 3, N - 1, N - 2, (1 << 255) - 1, 0x5555 * (M256 // 0xFFFF) % N] + [rand256() % N for _ in range(12)]:
    for i in range(len(PARAMS) - 1):
        ga, qa = PARAMS[i], PARAMS[(i + 1 + (u & 3)) % len(PARAMS)]
        want = []
        p256._schedule(u, ga[0], ga[1], ga[2], want, ga[3], ga[4])
        p256._schedule(u ^ 0x1234567, qa[0], qa[1], qa[2], want, qa[3], qa[4])
        want.sort(reverse=True)
        n = 0
        for k, a in ((u, ga), (u ^ 0x1234567, qa)):
            ws2[fe.SCALAR_OFF:fe.SCALAR_OFF + 32] = k.to_bytes(32, "little")
            ls = {32: 5, 64: 6, 1024: 10}[a[3]]
            struct.pack_into("<5I", ws2, fe.PARAM_OFF, a[0], a[1], a[2], ls, a[4])
            n = fe.wnaf(n, ws2)
        fe.order(n, ws2)
        got = list(struct.unpack_from("<%dI" % (n + 1), ws2, E0))
        count[0] += 1
        if got != want + [0x1E00]:
            bad.append("schedule %x %r %r" % (u, ga, qa))

# Tables at any alignment (a frozen bytes constant need not be even-aligned):
# the same verification on copies at an odd and an even address.
gt = p256._g()
qt = p256._table(GX, GY, 1)
u1, u2 = rand256() % N, rand256() % N
r_ok = None
for shift in (0, 1, 2, 3):
    tabs = [memoryview(bytearray(shift) + qt)[shift:], memoryview(bytearray(shift) + gt.G[0])[shift:]]
    got = nat.mul2(u1, (gt.W, 1 << 9, 0, 1024, 1), u2, (4, 0, 0, 1024, 1), tabs, 1)
    tabs = None
    X, Z = nat._get(0) % P, nat._get(2) % P
    x = X * p256._inv(Z * Z % P, P) % P
    count[0] += 1
    if r_ok is None:
        r_ok = x
    elif x != r_ok:
        bad.append("table at offset %d: x differs" % shift)
k = (u1 + u2) % N  # x(u1 G + u2 G) by big ints: (u1 + u2) G, double-and-add
R = None
Q = (GX, GY, 1)
while k:
    if k & 1:
        R = Q if R is None else madd(R[0], R[1], R[2], *aff(*Q))
    Q = p256._double_n(Q[0], Q[1], Q[2], 1)
    k >>= 1
count[0] += 1
if aff(*R)[0] != r_ok:
    bad.append("u1 G + u2 G: x differs from big ints")

# A degenerate addition: G + G at the same step. The native loop must hand it
# back (None) and p256._run must answer what the mpz loop answers.
g = p256._g()
tabs = [memoryview(g.G[0]), memoryview(g.G[0])]
two_g = p256._double_n(GX, GY, 1, 1)
r2 = two_g[0] * p256._inv(two_g[2] * two_g[2] % P, P) % P  # x(2G)
sched = [0 << 9 | 0, 1 << 9 | 0]  # G (table 0 entry 0) + G (table 1 entry 0), step 0
count[0] += 3
if nat.run(sorted(sched, reverse=True) + [0x1E00], tabs, r2 % p256._N) is not None:
    bad.append("degenerate addition not handed back")
if p256._run(list(sched), tabs, r2 % p256._N) is not True:
    bad.append("degenerate addition: 2G not found")
if p256._run(list(sched), tabs, (r2 + 1) % p256._N) is not False:
    bad.append("degenerate addition: wrong r accepted")

print("CHECK %d values, %d mismatches" % (count[0], bad.n))
for b in bad:
    print(b)
sys.exit(1 if bad.n else 0)
