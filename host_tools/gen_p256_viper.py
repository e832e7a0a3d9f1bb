"""Generate firmware/pos/p256_viper.py: P-256 field arithmetic in @micropython.viper.

The generated module holds one viper function, run(n, ws), an interpreter for
small programs of field operations on 256-bit values kept as 16 little-endian
16-bit limbs in a workspace bytearray (layout: the constants below). The
multiplication is unrolled with constant offsets, because the viper emitter
keeps only two locals in registers and every other local costs a load and a
store; those two registers hold the row's multiplier limb and a pointer.

  products  a[i]*b[j] < 2^32 are stored as 32-bit words in T; the column sums
            then add their 16-bit halves (read back through a 16-bit view, which
            needs a little-endian machine), so nothing overflows 32 bits and no
            carry is propagated until the end.
  reduction the 32 column sums c_k (unnormalised, < 2^21) are folded with the
            NIST P-256 word identities (FIPS 186-4 D.2.3, here per 16-bit half
            word) into 16 signed limbs, then one carry pass; the top carry is
            estimated first and folded in with 2^256 = 2^224 - 2^192 - 2^96 + 1
            (mod p), and the rare remainder is folded by a second pass.
  values    are "lazy": any 256-bit number congruent to the result, not
            necessarily < p. Inputs may be anything below 2^256.

Ops are 8 bytes [op, a, b, c, k1, s1, k2, s2] (k signed bytes):
  0 END   repeat the program (n >> 16) times in all, then return
  1 MUL   V[a] = columns of slot b * slot c        (a: 0 -> V1, 1 -> V2)
  2 SQR   V[a] = columns of slot b ^ 2
  3 COMB  V1 = b * V1 + c * V2                       (signed, |b| + |c| <= 9)
  4 RED   slot a = reduce(V1) + k1*slot s1 + k2*slot s2
  5 LIN   slot a = k1*slot s1 + k2*slot s2                    (|k| <= 8)
  6 CAN   slot a = slot a mod p, canonical (below p)
  7 SCHED the accumulator of pos.p256_native.run: the schedule entries (32-bit
          words from LOOP_OFF + 96, ending in 0x1E00; step << 14 | negate << 13
          | table << 9 | index) on tables whose addresses are LOOP_OFF words
          0..15 (each 2^31 + address - workspace address, mod 2^32), running
          the doubling, addition, subtraction and negation programs at the
          offsets in words 16..19 as subroutines; the point is slots 0-2, the
          one added 3-4.

inv(minv, ws) is a second function: the modular inverse by Bernstein-Yang
divsteps (safegcd, "Fast constant-time gcd computation and modular
inversion", 2019; the half-delta variant), here variable-time (it stops when
g = 0: verification has no secret), 14 divsteps per batch on the low limbs,
then the batch's 2x2 matrix applied to the 17-limb signed f, g and the
coefficients d, e (kept unreduced: each batch adds less than m/2 to them).

Run:  .venv/bin/python host_tools/gen_p256_viper.py  (rewrites the module; commit it)
"""
import sys
from pathlib import Path

P = 2**256 - 2**224 + 2**192 + 2**96 - 1
N_LIMBS = 16

# Workspace layout (byte offsets). The products first: their offsets must stay
# small (the xtensa loads and stores take at most 255 units of offset). Each
# half of them (8 rows of 16 products, 32-bit) comes right after a copy of the
# operand b, so that one register pointer reaches both.
T_OFF = 0
B1_OFF = 0  # b, then rows 0-7
T1_OFF = 32
B2_OFF = 544  # b again, then rows 8-15
T2_OFF = 576
V1_OFF = 1088  # 32 column sums
V2_OFF = 1216
R_OFF = 1344  # 16 signed limbs before the carry pass
SLOTS_OFF = 1408
N_SLOTS = 24
INV_OFF = SLOTS_OFF + 32 * N_SLOTS  # inv(): F, G, D, E, M, 17 limbs (+1 spare) each
INV_LIMBS = 17
LOOP_OFF = INV_OFF + 5 * 36  # SCHED: 16 table offsets, 4 program offsets, then the entries
MAX_SCHED = 160
SCALAR_OFF = LOOP_OFF + 4 * (24 + MAX_SCHED)  # wnaf(): the scalar, 36 bytes
PARAM_OFF = SCALAR_OFF + 36  # wnaf(): w, tag, step, log2(l), c
PROG_OFF = PARAM_OFF + 20
MAX_COMB = 9  # |b| + |c| of COMB
MAX_K = 8
# Every word the engine stores is kept non-negative and below 2^31, so it reads
# back the same through a 32-bit load on a 32- or a 64-bit machine (the unix
# port zero-extends): column sums carry a bias BV, and the signed limbs before
# the carry pass get BR[m], the limbs of a multiple of p, added.
BV = 1 << 25  # > MAX_COMB * the largest column sum


def nist_matrix():
    """M[w][j]: result word w = sum_j M[w][j] * c_j (32-bit words c_0..c_15 of a
    512-bit number), the NIST fast reduction s1 + 2s2 + 2s3 + s4 + s5 - s6 - s7 - s8 - s9."""
    M = [[0] * 16 for _ in range(8)]

    def add(coef, words):  # words listed from word 7 down to word 0
        for w, j in zip(range(7, -1, -1), words):
            if j is not None:
                M[w][j] += coef

    z = None
    add(1, [7, 6, 5, 4, 3, 2, 1, 0])
    add(2, [15, 14, 13, 12, 11, z, z, z])
    add(2, [z, 15, 14, 13, 12, z, z, z])
    add(1, [15, 14, z, z, z, 10, 9, 8])
    add(1, [8, 13, 15, 14, 13, 11, 10, 9])
    add(-1, [10, 8, z, z, z, 13, 12, 11])
    add(-1, [11, 9, z, z, 15, 14, 13, 12])
    add(-1, [12, z, 10, 9, 8, 15, 14, 13])
    add(-1, [13, z, 11, 10, 9, z, 15, 14])
    # The identity behind it: 2^(32j) = sum_w M[w][j] 2^(32w) (mod p) for every j.
    for j in range(16):
        assert (sum(M[w][j] << (32 * w) for w in range(8)) - (1 << (32 * j))) % P == 0, j
    return M


class Src:
    def __init__(self):
        self.lines = []
        self.ind = 0

    def __call__(self, s):
        self.lines.append("    " * self.ind + s)

    def block(self):
        src = self

        class B:
            def __enter__(self):
                src.ind += 1

            def __exit__(self, *a):
                src.ind -= 1

        return B()


def chain(terms):
    """A sum expression of (sign, text) terms, a positive one first."""
    terms = sorted(terms, key=lambda t: t[0] < 0)
    assert terms and terms[0][0] > 0
    out = terms[0][1]
    for s, t in terms[1:]:
        out += (" + " if s > 0 else " - ") + t
    return out


def mul_products(o, square):
    # b (register `b`, slot address) is copied in front of each half of the
    # products, so that `b` reaches its limbs and the products with constant
    # offsets; row i's multiplier limb a[i] is the register local `ai`.
    for half, base in ((0, "B1_OFF"), (1, "B2_OFF")):
        for k in range(8):
            o("ptr32(w + %s)[%d] = ptr32(b)[%d]" % (base, k, k))
    for half, base in ((0, "B1_OFF"), (1, "B2_OFF")):
        o("b = ptr16(w + %s)" % base)
        for i in range(8 * half, 8 * half + 8):
            o("ai = b[%d]" % i if square else "ai = ptr16(A)[%d]" % i)
            for j in range(i if square else 0, N_LIMBS):
                o("ptr32(b)[%d] = b[%d] * ai" % (8 + 16 * (i - 8 * half) + j, j))


def column_sums(o, square):
    # Two passes of 8 rows, b pointing at each pass's products, so every
    # 16-bit offset stays below 256. Column k collects the low halves of the
    # products at i + j = k and the high halves of those at i + j = k - 1.
    touched = set()
    for half in range(2):
        o("b = ptr16(w + %s)" % ("T2_OFF" if half else "T1_OFF"))
        cols = {}
        for i in range(8 * half, 8 * half + 8):
            for j in range(i if square else 0, N_LIMBS):
                idx = 2 * (16 * (i - 8 * half) + j)
                kind = "sq" if (square and i == j) else "x"
                cols.setdefault(i + j, []).append((kind, "b[%d]" % idx))
                cols.setdefault(i + j + 1, []).append((kind, "b[%d]" % (idx + 1)))
        for k in sorted(cols):
            xs = [t for kind, t in cols[k] if kind == "x"]
            sq = [t for kind, t in cols[k] if kind == "sq"]
            parts = (["((%s) << 1)" % " + ".join(xs)] if square and xs else xs) + sq
            expr = " + ".join(parts)
            expr += (" + ptr32(Vb)[%d]" % k) if k in touched else " + %d" % BV
            touched.add(k)
            o("ptr32(Vb)[%d] = %s" % (k, expr))
    assert touched == set(range(32)), sorted(set(range(32)) - touched)


def reduced(M, BR, m):
    """Limb m of the reduction, plus BR[m]: sum_j M[w][j] * V[2j+e] (m = 2w+e),
    V read through `ai`, each V carrying the bias BV, taken off with BR[m] as
    one constant."""
    w, e = divmod(m, 2)
    terms = []
    for j in range(16):
        c = M[w][j]
        terms += [(1 if c > 0 else -1, "ptr32(ai)[%d]" % (2 * j + e))] * abs(c)
    k = BR[m] - BV * sum(M[w])
    return "%s %s %d" % (chain(terms), "+" if k >= 0 else "-", abs(k))


def bounds(M):
    """(largest |signed limb| before the bias, BR): checks that every word the
    engine computes fits a signed 32-bit int and every stored one is >= 0."""
    col = 31 * 0xFFFF  # most half-products in one column (16 low + 15 high halves)
    assert BV > MAX_COMB * col  # b V1 + c V2 + BV >= 0
    v = MAX_COMB * col  # |b V1 + c V2|
    r = max(sum(abs(c) for c in row) for row in M) * v + 2 * MAX_K * 0xFFFF
    # BR: limbs of a multiple of p, each at least base > r, and base + 2^16 a
    # viper immediate (a small int on a 32-bit port: below 2^30).
    base = (r // (1 << 24) + 2) << 24
    assert base + 0x10000 < 1 << 30
    ones = sum(base << (16 * m) for m in range(N_LIMBS))
    n = -(-ones // P) * P
    d = n - ones
    assert 0 <= d < 1 << 256
    BR = [base + ((d >> (16 * m)) & 0xFFFF) for m in range(N_LIMBS)]
    assert sum(b << (16 * m) for m, b in enumerate(BR)) % P == 0
    top = base + 0x10000 + r  # largest stored limb; the carry pass adds < 2^16
    assert top + (1 << 16) < 1 << 31 and base - r > 1 << 16
    # Largest word the column sums and the combination make.
    assert MAX_COMB * (col + BV) + BV < 1 << 31
    return r, BR


# The inverse, hand-written (rolled loops: it runs once or twice per verify).
INV_SOURCE = '''

@micropython.viper
def inv(ai: int, b: ptr16) -> int:
    """Bernstein-Yang inverse. The INV area of workspace b holds f = m, g = a,
    d = 0, e = 1 and m (17 16-bit limbs each, two's complement, 36 bytes
    apart); ai = -1/m mod 2^14. On return g = 0, f = +-gcd(a, m) and
    f = d * a mod m (d unreduced, signed). Returns the batches run, or -1 if
    it did not converge (it always does within 43 for 256-bit values)."""
    F = int(b) + INV_OFF
    G = F + 36
    Dd = F + 72
    E = F + 108
    M = F + 144
    delta = 1  # twice the paper's delta, which starts at 1/2
    n = 0
    while n < 64:
        j = 0
        z = 0
        while j < 17:
            z = z | ptr16(G)[j]
            j += 1
        if z == 0:
            return n
        n += 1
        # 14 divsteps on the low limbs: their decisions depend on nothing else.
        f = ptr16(F)[0]
        g = ptr16(G)[0]
        u = 1
        v = 0
        q = 0
        r = 1
        i = 0
        while i < 14:
            if g & 1:
                if delta > 0:
                    t = f
                    f = g
                    g = (g - t) >> 1
                    t = u
                    u = q << 1
                    q = q - t
                    t = v
                    v = r << 1
                    r = r - t
                    delta = 2 - delta
                else:
                    g = (g + f) >> 1
                    q = q + u
                    r = r + v
                    u = u << 1
                    v = v << 1
                    delta += 2
            else:
                g = g >> 1
                u = u << 1
                v = v << 1
                delta += 2
            i += 1
        # (f, g) = (u f + v g, q f + r g) / 2^14, exact. |u| + |v| <= 2^14 and
        # |q| + |r| <= 2^14, so each sum of products stays below 2^30.
        cf = 0
        cg = 0
        pf = 0
        pg = 0
        j = 0
        while j < 17:
            x = ptr16(F)[j]
            y = ptr16(G)[j]
            if j == 16:
                if x > 32767:
                    x -= 65536
                if y > 32767:
                    y -= 65536
            cf = cf + u * x + v * y
            cg = cg + q * x + r * y
            lf = cf & 0xFFFF
            lg = cg & 0xFFFF
            cf = cf >> 16
            cg = cg >> 16
            if j:
                ptr16(F)[j - 1] = (pf >> 14) | (lf << 2)
                ptr16(G)[j - 1] = (pg >> 14) | (lg << 2)
            pf = lf
            pg = lg
            j += 1
        ptr16(F)[16] = (pf >> 14) | (cf << 2)
        ptr16(G)[16] = (pg >> 14) | (cg << 2)
        # (d, e) = (u d + v e + kd m, q d + r e + ke m) / 2^14, with kd, ke in
        # [-2^13, 2^13) making the sums divisible by 2^14. d and e stay
        # unreduced: each batch moves them by less than m/2, and 17 limbs hold
        # far more than 64 batches can add.
        x = ptr16(Dd)[0]
        y = ptr16(E)[0]
        kd = (((u * x + v * y) & 0x3FFF) * ai) & 0x3FFF
        ke = (((q * x + r * y) & 0x3FFF) * ai) & 0x3FFF
        if kd >= 8192:
            kd -= 16384
        if ke >= 8192:
            ke -= 16384
        cf = 0
        cg = 0
        pf = 0
        pg = 0
        j = 0
        while j < 17:
            x = ptr16(Dd)[j]
            y = ptr16(E)[j]
            mj = ptr16(M)[j]
            if j == 16:
                if x > 32767:
                    x -= 65536
                if y > 32767:
                    y -= 65536
            cf = cf + u * x + v * y + kd * mj
            cg = cg + q * x + r * y + ke * mj
            lf = cf & 0xFFFF
            lg = cg & 0xFFFF
            cf = cf >> 16
            cg = cg >> 16
            if j:
                ptr16(Dd)[j - 1] = (pf >> 14) | (lf << 2)
                ptr16(E)[j - 1] = (pg >> 14) | (lg << 2)
            pf = lf
            pg = lg
            j += 1
        ptr16(Dd)[16] = (pf >> 14) | (cf << 2)
        ptr16(E)[16] = (pg >> 14) | (cg << 2)
    return -1
'''


# wNAF recoding and the schedule's sort, hand-written (pos.p256._schedule's
# loop, on the workspace).
SCHED_SOURCE = '''

@micropython.viper
def wnaf(ai: int, b: ptr16) -> int:
    """Append the width-w NAF digits of the scalar at SCALAR_OFF (32 bytes,
    little-endian, 4 zero bytes after) to the schedule at LOOP_OFF + 96 as
    pos.p256._schedule does, from entry ai on; the parameters are the words
    at PARAM_OFF: w, tag, step, log2(l), c. Returns the new entry count, or -1
    when MAX_SCHED would be exceeded."""
    w0 = int(b)
    k = ptr8(w0 + SCALAR_OFF)
    P = ptr32(w0 + PARAM_OFF)
    E = ptr32(w0 + LOOP_OFF + 96)
    n = ai
    wd = P[0]
    tag = P[1]
    step = P[2]
    ls = P[3]
    c = P[4]
    full = 1 << wd
    mask = full - 1
    half = full >> 1
    i = 0
    carry = 0
    while i < 256 or carry:
        x = (k[i >> 3] | (k[(i >> 3) + 1] << 8)) >> (i & 7)
        v = x + carry
        if v & 1:
            d = v & mask
            if d >= half:
                d -= full
            carry = ((x & mask) + carry - d) >> wd
            ck = i >> ls
            if ck >= c:
                ck = c - 1
            if n >= MAX_SCHED - 1:
                return -1
            if d < 0:
                E[n] = ((i - (ck << ls)) << 14) | 0x2000 | (tag + ck * step + ((0 - d) >> 1))
            else:
                E[n] = ((i - (ck << ls)) << 14) | (tag + ck * step + (d >> 1))
            n += 1
            i += wd
        else:
            t = 1
            while not ((v >> t) & 1) and t < 8:
                t += 1
            carry = ((x & ((1 << t) - 1)) + carry) >> t
            i += t
    return n


@micropython.viper
def order(ai: int, b: ptr16):
    """Sort the ai schedule entries, highest first (insertion sort: under a
    hundred entries, in runs already in order), and end them with 0x1E00."""
    E = ptr32(int(b) + LOOP_OFF + 96)
    i = 1
    while i < ai:
        x = E[i]
        j = i - 1
        while j >= 0 and E[j] < x:
            E[j + 1] = E[j]
            j -= 1
        E[j + 1] = x
        i += 1
    E[ai] = 0x1E00
'''


def generate():
    M = nist_matrix()
    r_max, BR = bounds(M)
    o = Src()
    o("# Generated by host_tools/gen_p256_viper.py -- do not edit. See that file for the method.")
    o("# P-256 field arithmetic in viper: run(n, ws) interprets field-op programs in the workspace")
    o("# ws (a bytearray of WS_SIZE bytes); n = program offset | repeat count << 16.")
    o("# Largest |signed limb| before the bias BR: %d; BR[m] >= %d." % (r_max, min(BR)))
    o("import micropython")
    o("from micropython import const")
    o("")
    for name, val in (("B1_OFF", B1_OFF), ("T1_OFF", T1_OFF), ("B2_OFF", B2_OFF), ("T2_OFF", T2_OFF),
                      ("V1_OFF", V1_OFF), ("V2_OFF", V2_OFF), ("R_OFF", R_OFF),
                      ("SLOTS_OFF", SLOTS_OFF), ("N_SLOTS", N_SLOTS), ("INV_OFF", INV_OFF),
                      ("SCALAR_OFF", SCALAR_OFF), ("PARAM_OFF", PARAM_OFF), ("PROG_OFF", PROG_OFF)):
        o("%s = const(%d)" % (name, val))
    o("OP_END = const(0)")
    o("OP_MUL = const(1)")
    o("OP_SQR = const(2)")
    o("OP_COMB = const(3)")
    o("OP_RED = const(4)")
    o("OP_LIN = const(5)")
    o("OP_CAN = const(6)")
    o("OP_SCHED = const(7)")
    o("LOOP_OFF = const(%d)" % LOOP_OFF)
    o("MAX_SCHED = const(%d)" % MAX_SCHED)
    o("")
    o("")
    o("@micropython.viper")
    o("def run(ai: int, b: ptr16):")
    with o.block():
        o('"""Run the program at PROG_OFF + (ai & 0xFFFF) in workspace b, (ai >> 16) times."""')
        o("w = int(b)")
        o("start = w + PROG_OFF + (ai & 0xFFFF)")
        o("cnt = ai >> 16")
        o("pc = start")
        o("Rb = w + R_OFF")
        o("S0 = w + SLOTS_OFF")
        o("L = w + LOOP_OFF")
        o("ret = 0  # a subroutine's return pc (SCHED), 0 at the top level")
        o("sub = 0")
        o("scnt = 0")
        o("si = 0")
        o("cur = 0")
        o("B31 = 1")
        o("B31 = B31 << 31  # 2^31 (mod 2^32 on a 32-bit port): computed, not a constant")
        o("while True:")
        with o.block():
            o("p = ptr8(pc)")
            o("op = p[0]")
            o("if op == OP_END:")
            with o.block():
                o("if ret:")
                with o.block():
                    o("scnt -= 1")
                    o("if scnt > 0:")
                    with o.block():
                        o("pc = sub")
                    o("else:")
                    with o.block():
                        o("pc = ret")
                        o("ret = 0")
                    o("continue")
                o("cnt -= 1")
                o("if cnt <= 0:")
                with o.block():
                    o("break")
                o("pc = start")
                o("continue")
            o("if op == OP_SCHED:")
            with o.block():
                o("# Re-entered after each subroutine; si = entries done.")
                o("e = ptr32(L)[24 + si]")
                o("j = e >> 14")
                o("if si and cur > j:")
                with o.block():
                    o("ret = pc")
                    o("sub = w + PROG_OFF + ptr32(L)[16]")
                    o("scnt = cur - j")
                    o("cur = j")
                    o("pc = sub")
                    o("continue")
                o("if e == 0x1E00:")
                with o.block():
                    o("si = 0")
                    o("pc += 8")
                    o("continue")
                o("# The entry's point: to slots 3-4, or 0-1 (with Z = 1) for the first.")
                o("src = ptr32(L)[(e >> 9) & 15] - B31 + w + ((e & 0x1FF) << 6)")
                o("dst = S0")
                o("if si:")
                with o.block():
                    o("dst += 96")
                o("if src & 1:")
                with o.block():
                    o("k = 0")
                    o("while k < 64:")
                    with o.block():
                        o("ptr8(dst)[k] = ptr8(src)[k]")
                        o("k += 1")
                o("else:")
                with o.block():
                    for k in range(32):
                        o("ptr16(dst)[%d] = ptr16(src)[%d]" % (k, k))
                o("ret = pc")
                o("scnt = 1")
                o("if si == 0:")
                with o.block():
                    o("b = ptr16(S0 + 64)")
                    o("b[0] = 1")
                    for k in range(1, 16):
                        o("b[%d] = 0" % k)
                    o("cur = j")
                    o("si = 1")
                    o("if not (e & 0x2000):")
                    with o.block():
                        o("ret = 0")
                        o("continue")
                    o("sub = w + PROG_OFF + ptr32(L)[19]")
                o("else:")
                with o.block():
                    o("si += 1")
                    o("k = 17")
                    o("if e & 0x2000:")
                    with o.block():
                        o("k = 18")
                    o("sub = w + PROG_OFF + ptr32(L)[k]")
                o("pc = sub")
                o("continue")
            o("pc += 8")
            o("if op == OP_MUL:")
            with o.block():
                o("A = S0 + (p[2] << 5)")
                o("Vb = w + V1_OFF + (p[1] << 7)")
                o("b = ptr16(S0 + (p[3] << 5))")
                mul_products(o, False)
                column_sums(o, False)
            o("elif op == OP_SQR:")
            with o.block():
                o("A = S0 + (p[2] << 5)")
                o("Vb = w + V1_OFF + (p[1] << 7)")
                o("b = ptr16(A)")
                mul_products(o, True)
                column_sums(o, True)
            o("elif op == OP_COMB:")
            with o.block():
                o("a = p[2]")
                o("if a > 127:")
                with o.block():
                    o("a -= 256")
                o("c = p[3]")
                o("if c > 127:")
                with o.block():
                    o("c -= 256")
                o("cb = (a + c - 1) * %d  # keeps the bias BV" % BV)
                o("ai = w + V1_OFF")
                o("b = ptr16(w + V2_OFF)")
                for k in range(32):
                    o("ptr32(ai)[%d] = ptr32(ai)[%d] * a + ptr32(b)[%d] * c - cb" % (k, k, k))
            o("elif op == OP_CAN:")
            with o.block():
                o("# A lazy value is below 2^256 < 2p: subtract p once if that does not borrow.")
                o("b = ptr16(S0 + (p[1] << 5))")
                o("ai = Rb")
                o("c = b[0] - %d" % (P & 0xFFFF))
                o("ptr16(ai)[0] = c")
                for m in range(1, N_LIMBS):
                    o("c = (c >> 16) + b[%d] - %d" % (m, (P >> (16 * m)) & 0xFFFF))
                    o("ptr16(ai)[%d] = c" % m)
                o("if not (c >> 16):")
                with o.block():
                    for m in range(N_LIMBS):
                        o("b[%d] = ptr16(ai)[%d]" % (m, m))
            o("else:")
            with o.block():
                fold = {0: " + e", 6: " - e", 12: " - e", 14: " + e", 15: " - (e << 16)"}
                o("b = ptr16(S0 + (p[1] << 5))")
                o("if op == OP_RED and not (p[4] | p[6]):")
                with o.block():
                    o("# The reduction straight into the carry pass: limbs 15 and 14")
                    o("# first, for the estimate e of the top carry.")
                    o("ai = w + V1_OFF")
                    for m in (14, 15):
                        o("ptr32(Rb)[%d] = %s" % (m, reduced(M, BR, m)))
                    o("e = (ptr32(Rb)[15] + (ptr32(Rb)[14] >> 16)) >> 16")
                    o("c = %s + e" % reduced(M, BR, 0))
                    o("b[0] = c")
                    for m in range(1, 14):
                        o("c = (c >> 16) + %s%s" % (reduced(M, BR, m), fold.get(m, "")))
                        o("b[%d] = c" % m)
                    for m in (14, 15):
                        o("c = (c >> 16) + ptr32(Rb)[%d]%s" % (m, fold[m]))
                        o("b[%d] = c" % m)
                o("else:")
                with o.block():
                    o("if op == OP_RED:")
                    with o.block():
                        o("ai = w + V1_OFF")
                        for m in range(N_LIMBS):
                            o("ptr32(Rb)[%d] = %s" % (m, reduced(M, BR, m)))
                    o("else:")
                    with o.block():
                        for m in range(N_LIMBS):
                            o("ptr32(Rb)[%d] = %d" % (m, BR[m]))
                    o("t = 4")
                    o("while t <= 6:")
                    with o.block():
                        o("k = p[t]")
                        o("if k:")
                        with o.block():
                            o("if k > 127:")
                            with o.block():
                                o("k -= 256")
                            o("ai = k")
                            o("b = ptr16(S0 + (p[t + 1] << 5))")
                            for m in range(N_LIMBS):
                                o("ptr32(Rb)[%d] = b[%d] * ai + ptr32(Rb)[%d]" % (m, m, m))
                        o("t += 2")
                    # Normalise R into the destination slot: fold the top carry's
                    # estimate e with 2^256 = 2^224 - 2^192 - 2^96 + 1 inside the
                    # carry pass (so no stored word goes negative); what is left
                    # above 2^256 is 0 or 1 (then the value is below 2^256 + 2^242).
                    o("ai = Rb")
                    o("b = ptr16(S0 + (p[1] << 5))")
                    o("e = (ptr32(ai)[15] + (ptr32(ai)[14] >> 16)) >> 16")
                    o("c = ptr32(ai)[0] + e")
                    o("b[0] = c")
                    for m in range(1, N_LIMBS):
                        o("c = (c >> 16) + ptr32(ai)[%d]%s" % (m, fold.get(m, "")))
                        o("b[%d] = c" % m)
                o("if c >> 16:")
                with o.block():
                    o("# 2^256 <= value < 2^256 + 2^242: take p off (add 2^256 - p, drop 2^256).")
                    q = (1 << 256) - P
                    o("c = b[0] + %d" % (q & 0xFFFF))
                    o("b[0] = c")
                    for m in range(1, N_LIMBS):
                        o("c = (c >> 16) + b[%d] + %d" % (m, (q >> (16 * m)) & 0xFFFF))
                        o("b[%d] = c" % m)
    o(INV_SOURCE.rstrip("\n"))
    o(SCHED_SOURCE.rstrip("\n"))
    o("")
    o("")
    o("@micropython.viper")
    o("def addr(x: ptr8) -> uint:")
    with o.block():
        o('"""The address of a buffer (for the SCHED op\'s table offsets)."""')
        o("return uint(x)")
    o("")
    o("")
    o("WS_SIZE = const(%d)  # workspace bytes before the programs" % PROG_OFF)
    return "\n".join(o.lines) + "\n"


def main(path=None):
    path = Path(path or Path(__file__).resolve().parents[1] / "firmware" / "pos" / "p256_viper.py")
    src = generate()
    path.write_text(src)
    print("wrote %s (%d lines)" % (path, src.count("\n")))


if __name__ == "__main__":
    main(*sys.argv[1:])
