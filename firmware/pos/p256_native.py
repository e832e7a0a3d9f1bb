# The native P-256 backend: point operations as programs for the viper field
# engine (pos.p256_viper), and the hot parts of pos.p256 on top of them: the
# whole of u1*G + u2*Q (schedule, sort and accumulator run in the engine; the
# entries are pos.p256._schedule's, step << 14 | negate << 13 | table << 9 |
# index), the building of a key's table, and the modular inverse.
#
# Points are Jacobian (X, Y, Z) in workspace slots, coordinates 256-bit "lazy"
# values (congruent mod p, below 2^256). A table entry is an affine x || y, 32
# bytes little-endian each: exactly the two slots it is added from.
#
# The accumulator never branches on the values. A mixed addition with the
# accumulator equal to +-the added point (h = 0) sets Z to 0, and Z = 0 then
# stays 0 through every later doubling (Z' = 2YZ) and addition (Z' = Z*h); so
# the loop runs straight through and run() answers None when Z ends at 0 mod p:
# the caller reruns that verification with the mpz code, which handles those
# cases. A Z that is not 0 proves that no addition was degenerate.
import struct
from array import array

from micropython import const

from pos import p256_viper as fe

_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# Slots. 0-2: the point being worked on; 3-4: the affine point added (or, in
# the table builder, the co-Z partner D); 5 and up: temporaries.
_X = const(0)
_Y = const(1)
_Z = const(2)
_PX = const(3)
_PY = const(4)


def _off(slot):
    return fe.SLOTS_OFF + 32 * slot


def _op(o, a=0, b=0, c=0, k1=0, s1=0, k2=0, s2=0):
    return bytes((o, a, b & 255, c & 255, k1 & 255, s1, k2 & 255, s2))


def _mul(d, x, y, *fused):
    # d = x*y (+ k*s ...): the products' columns, then the reduction.
    return _op(fe.OP_MUL, 0, x, y) + _op(fe.OP_RED, d, 0, 0, *fused)


def _sqr(d, x, *fused):
    return _op(fe.OP_SQR, 0, x) + _op(fe.OP_RED, d, 0, 0, *fused)


def _lin(d, k1, s1, k2=0, s2=0):
    return _op(fe.OP_LIN, d, 0, 0, k1, s1, k2, s2)


_END_OP = bytes(8)


def _programs():
    # Name -> ops (fe's format); M/S(d, x[, y], k, s ...): d = x*y (or x^2) + k*s ...,
    # L(d, k1, s1, k2, s2): d = k1*s1 + k2*s2. Temporaries from slot 5 on.
    X, Y, Z, PX, PY = _X, _Y, _Z, _PX, _PY
    M, S, L = _mul, _sqr, _lin
    op = _op
    P = {}
    # Doubling, a = -3 (dbl-2001-b): delta = Z^2, gamma = Y^2, beta = X gamma,
    # alpha = 3 (X^2 - delta^2), X' = alpha^2 - 8 beta, Z' = (Y + Z)^2 - gamma - delta,
    # Y' = alpha (4 beta - X') - 8 gamma^2 (the last product and square share one reduction).
    P["dbl"] = (S(5, Z) + S(6, Y) + M(7, X, 6)
                + op(fe.OP_SQR, 0, X) + op(fe.OP_SQR, 1, 5) + op(fe.OP_COMB, 0, 3, -3) + op(fe.OP_RED, 8)
                + S(X, 8, -8, 7) + L(9, 1, Y, 1, Z) + S(Z, 9, -1, 6, -1, 5) + L(10, 4, 7, -1, X)
                + op(fe.OP_MUL, 0, 8, 10) + op(fe.OP_SQR, 1, 6) + op(fe.OP_COMB, 0, 1, -8) + op(fe.OP_RED, Y, 1))
    # Mixed addition (X, Y, Z) += (x2, y2) affine, 8M + 3S: zz = Z^2, h = x2 zz - X,
    # rr = y2 Z zz - Y, X' = rr^2 - h^3 - 2 X h^2, Y' = rr (X h^2 - X') - Y h^3, Z' = Z h.
    # Adding -(x2, y2) computes rr' = -rr = y2 Z zz + Y and (X' - X h^2): the same Y'.
    for name, sign in (("add", 1), ("sub", -1)):
        P[name] = (S(5, Z) + M(6, PX, 5, -1, X) + M(7, Z, 5) + M(8, PY, 7, -sign, Y)
                   + S(9, 6) + M(10, 6, 9) + M(11, X, 9) + S(X, 8, -1, 10, -2, 11)
                   + L(12, sign, 11, -sign, X)
                   + op(fe.OP_MUL, 0, 8, 12) + op(fe.OP_MUL, 1, Y, 10) + op(fe.OP_COMB, 0, 1, -1) + op(fe.OP_RED, Y, 1)
                   + M(Z, Z, 6))
    P["neg"] = L(Y, -1, Y)
    # Table building. dblu: D = 2P (slots 3, 4, Z in 2) and P rescaled to D's Z:
    # X = 4 beta, Y = 8 gamma^2 (as pos.p256._table does).
    P["dblu"] = (S(5, Z) + S(6, Y) + M(7, X, 6)
                 + op(fe.OP_SQR, 0, X) + op(fe.OP_SQR, 1, 5) + op(fe.OP_COMB, 0, 3, -3) + op(fe.OP_RED, 8)
                 + S(PX, 8, -8, 7) + L(9, 1, Y, 1, Z) + S(Z, 9, -1, 6, -1, 5) + S(10, 6)
                 + L(11, 4, 7, -1, PX) + M(PY, 8, 11, -8, 10) + L(X, 4, 7) + L(Y, 8, 10))
    # zaddu (Meloni, co-Z): M = (X, Y) += D (slots 3, 4, same Z), and D rescaled
    # to the sum's Z: e = DX - X (to slot 5), c = e^2, w1 = DX c (the new DX),
    # w2 = X c, f = DY - Y, a1 = DY (w1 - w2) (the new DY), X' = f^2 - w1 - w2,
    # Y' = f (w1 - X') - a1.
    P["zaddu"] = (L(5, 1, PX, -1, X) + S(6, 5) + M(PX, PX, 6) + M(8, X, 6) + L(9, 1, PY, -1, Y)
                  + L(10, 1, PX, -1, 8) + M(PY, PY, 10) + S(X, 9, -1, PX, -1, 8)
                  + L(10, 1, PX, -1, X) + M(Y, 9, 10, -1, PY))
    # Affine: (X, Y) / zi^(2, 3), canonical; zi *= e (slot 7) for the next entry.
    P["aff"] = (S(5, Z) + M(X, X, 5) + M(6, 5, Z) + M(Y, Y, 6) + M(Z, Z, 7)
                + op(fe.OP_CAN, X) + op(fe.OP_CAN, Y))
    P["mul"] = M(Z, X, Y) + op(fe.OP_CAN, Z)
    P["sched"] = op(fe.OP_SCHED)
    return P


_ws = None
_prog = {}  # name -> run() argument for one pass
_ONE = (1).to_bytes(32, "little")


def init():
    """Allocate the workspace (about 4 KB, kept) and check the engine once on
    this machine against big-int arithmetic. True if the native backend is usable."""
    global _ws
    if _ws is not None:
        return True
    P = _programs()
    blob = b""
    for name in P:
        _prog[name] = len(blob) | 1 << 16
        blob += P[name] + _END_OP
    ws = bytearray(fe.PROG_OFF + len(blob))
    ws[fe.PROG_OFF:] = blob
    for i, name in enumerate(("dbl", "add", "sub", "neg")):  # SCHED's subroutines
        struct.pack_into("<I", ws, fe.LOOP_OFF + 64 + 4 * i, _prog[name] & 0xFFFF)
    _ws = ws
    # Known answers: edge values and their products, reduced; a wrong answer
    # (a port without a little-endian 16-bit view, a miscompiled emitter) disables it.
    a = _P - 1
    b = (1 << 256) - 1
    ok = _fmul(a, b) == a * b % _P and _fmul(b, b) == b * b % _P and _fmul(3, _P) == 0
    if not ok:
        _ws = None
    return ok


def _put(slot, v):
    o = _off(slot)
    _ws[o:o + 32] = v.to_bytes(32, "little")


def _get(slot):
    o = _off(slot)
    return int.from_bytes(_ws[o:o + 32], "little")


def _fmul(x, y):
    _put(_X, x)
    _put(_Y, y)
    fe.run(_prog["mul"], _ws)
    return _get(_Z)


_minv = {}  # modulus -> -1/m mod 2^14, for inv()


def _signed(b):
    # 17 little-endian 16-bit limbs, two's complement.
    v = int.from_bytes(b, "little")
    return v - (1 << 272) if v >> 271 else v


def inverse(a, m):
    """1/a mod m for an odd m < 2^256 (pos.p256_viper.inv); None when the
    engine's answer does not check out (the caller then asks the big-int
    code, which also says whether a is invertible at all)."""
    k = _minv.get(m)
    if k is None:
        x = m  # m * m = 1 mod 8; Newton doubles the good bits
        for _ in range(4):
            x = x * (2 - m * x) & 0x3FFF
        k = _minv[m] = -x & 0x3FFF
    ws = _ws
    o = fe.INV_OFF
    a %= m
    ws[o:o + 36] = m.to_bytes(36, "little")
    ws[o + 36:o + 72] = a.to_bytes(36, "little")
    ws[o + 72:o + 144] = bytes(72)
    ws[o + 108] = 1
    ws[o + 144:o + 180] = m.to_bytes(36, "little")
    if fe.inv(k, ws) < 0:
        return None
    f = _signed(ws[o:o + 34])
    if f != 1 and f != -1:
        return None
    x = _signed(ws[o + 72:o + 106]) * f % m
    return x if x * a % m == 1 else None


def run(sched, tabs, r):
    """pos.p256._run_mpz natively: sched sorted, highest step first, ending in
    0x1E00. True iff x(sum of the scheduled multiples) = r mod n; None when an
    addition was degenerate (the caller asks the mpz code)."""
    if len(sched) > fe.MAX_SCHED:
        return None
    o = fe.LOOP_OFF + 96
    _ws[o:o + 4 * len(sched)] = bytes(array("I", sched))
    return _acc(tabs, r)


def mul2(u1, ga, u2, qa, tabs, r):
    """x(u1*G + u2*Q) mod n == r, the schedule made here too: ga and qa are
    pos.p256._schedule's (w, tag, step, l, c) for each scalar. None as run()."""
    ws = _ws
    n = 0
    for k, a in ((u1, ga), (u2, qa)):
        ws[fe.SCALAR_OFF:fe.SCALAR_OFF + 32] = k.to_bytes(32, "little")
        ls = 0
        while 1 << ls < a[3]:
            ls += 1
        struct.pack_into("<5I", ws, fe.PARAM_OFF, a[0], a[1], a[2], ls, a[4])
        n = fe.wnaf(n, ws)
        if n < 0:
            return None
    if not n:
        return False
    fe.order(n, ws)
    return _acc(tabs, r)


def _acc(tabs, r):
    # The schedule is in the workspace: run it (the SCHED op) and check x.
    ws = _ws
    if len(tabs) > 15:
        return None
    # SCHED reads the tables where they are: their addresses, relative to the
    # workspace's (the GC never moves a block; the caller holds them).
    base = fe.addr(ws)
    for k in range(len(tabs)):
        struct.pack_into("<I", ws, fe.LOOP_OFF + 4 * k, (fe.addr(tabs[k]) - base + (1 << 31)) & 0xFFFFFFFF)
    fe.run(_prog["sched"], ws)
    p = _P
    z = _get(_Z) % p
    if not z:
        return None
    zz = z * z % p
    x = _get(_X) % p
    if r * zz % p == x:
        return True
    r += _N
    return r < p and r * zz % p == x


def table(x, y, chunks, bases, w, out, l):
    """pos.p256._table natively (same bytes): affine odd multiples d*2^(k*l)*Q
    (chunk k starting at bases[k-1] when given)."""
    from pos.p256 import _inv  # the one inversion (inverse() above when in use)

    ws = _ws
    go = fe.run
    h = 1 << (w - 2)
    n = chunks * h
    if out is None:
        out = bytearray(64 * n)
    zs = bytearray(32 * n)  # entry k*h: chunk k's Z; k*h + j: the factor e of multiple j
    s0 = _off(_X)
    s2 = _off(_Z)
    s3 = _off(_PX)
    s5 = _off(5)
    save = bytearray(96)
    _put(_X, x)
    _put(_Y, y)
    ws[s2:s2 + 32] = _ONE
    for k in range(chunks):
        go(_prog["dblu"], ws)
        o = 64 * k * h
        out[o:o + 64] = ws[s0:s0 + 64]
        zs[32 * k * h:32 * k * h + 32] = ws[s2:s2 + 32]
        nxt = None
        if k < chunks - 1:
            if bases is None:
                # Walk 2P to 2^l P for the next chunk, keeping D and Z aside.
                save[0:64] = ws[s3:s3 + 64]
                save[64:96] = ws[s2:s2 + 32]
                ws[s0:s0 + 64] = save[0:64]
                go(_prog["dbl"] & 0xFFFF | (l - 1) << 16, ws)
                nxt = bytes(ws[s0:s0 + 96])
                ws[s0:s0 + 64] = out[o:o + 64]
                ws[s3:s3 + 64] = save[0:64]
                ws[s2:s2 + 32] = save[64:96]
            else:
                nxt = bases[k][0].to_bytes(32, "little") + bases[k][1].to_bytes(32, "little") + _ONE
        for j in range(1, h):
            go(_prog["zaddu"], ws)
            out[o + 64 * j:o + 64 * j + 64] = ws[s0:s0 + 64]
            zs[32 * (k * h + j):32 * (k * h + j) + 32] = ws[s5:s5 + 32]
        if nxt is not None:
            ws[s0:s0 + 96] = nxt
    # Z of each chunk's last multiple; one inversion for all (Montgomery's
    # trick), then back down each chunk: the Z of multiple j-1 is Z_j / e_j.
    zl = []
    for k in range(chunks):
        z = int.from_bytes(zs[32 * k * h:32 * k * h + 32], "little")
        for j in range(1, h):
            z = _fmul(z, int.from_bytes(zs[32 * (k * h + j):32 * (k * h + j) + 32], "little"))
        zl.append(z)
    acc = 1
    pre = []
    for z in zl:
        pre.append(acc)
        acc = _fmul(acc, z)
    inv = _inv(acc, _P)
    for k in range(chunks - 1, -1, -1):
        zi = _fmul(inv, pre[k])  # 1 / Z of the chunk's last multiple
        inv = _fmul(inv, zl[k])
        _put(_Z, zi)
        for j in range(h - 1, -1, -1):
            e = 64 * (k * h + j)
            ws[s0:s0 + 64] = out[e:e + 64]
            if j:
                ws[_off(7):_off(7) + 32] = zs[32 * (k * h + j):32 * (k * h + j) + 32]
            go(_prog["aff"], ws)
            out[e:e + 64] = ws[s0:s0 + 64]
    return out
