# ECDSA P-256 signature verification, in plain MicroPython integers or, for the
# field arithmetic, in viper code (use(), below).
#
# Cost model of the big-int code (unix port; similar ratios on the ESP32): a 512-bit `% p` costs
# about two multiplications and dominates, so the formulas are arranged for
# the fewest reductions, the hot loop has no calls or tuples, and nothing
# uses pow() for an inverse.
#
# u1*G + u2*Q is evaluated with the scalars' wNAF digits cut into _C chunks of
# _L bits: a digit at bit k*_L + j is added at step j as a multiple of
# 2^(k*_L)*P, so the accumulator needs only _L doublings. The tables of those
# multiples are affine, so every addition is a mixed one. G's come
# precomputed (p256_gtab.py, in flash on the device). Q's cost (_C-1)*_L
# doublings to build, so a key's first verify does not build them: it runs
# one chunk of 256 steps with Q's four smallest odd multiples (the ~256
# doublings any first verify spends, and no more). warm() builds a key's full
# table -- the app does it while idle, after a wallet's first payment -- and a
# small LRU keeps it, so the wallet's next verify needs only _L doublings.
# A credential may carry the issuer's 2^64 Q, 2^128 Q, 2^192 Q ("hints",
# PROTOCOL.md): a first verify then needs 64 doublings instead of 256.
#
# Table entries are affine x || y, 32 bytes little-endian each. The field
# arithmetic has two backends behind use(): big ints ("mpz", here) and viper
# code ("native", pos.p256_native: u1*G + u2*Q from the scalars on, the tables
# and the inverses), about 2.7x faster on the ESP32 estimate and 4x in the unix
# port; the board chooses. Both give the same answers and the same tables.
from micropython import const

_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_SQRT_EXP = (_P + 1) // 4  # p = 3 mod 4, so sqrt(c) = c^((p+1)/4)

_C = const(8)  # chunks per scalar (must match p256_gtab.C)
_L = const(32)  # bits per chunk (must match p256_gtab.L)
Q_WINDOW = const(4)  # wNAF width for Q: 2^(Q_WINDOW-2) odd multiples per chunk
CACHE_KEYS = const(4)  # keys whose tables are kept (2 KB each; the 128 KB data heap holds 4 beside the uplink)

# Schedule entries are small ints: step << 14 | negate << 13 | table << 9 | index,
# table 0 = Q's (all chunks), 1 + k = G's chunk k.
_STEP = const(14)
_NEG = const(0x2000)
_TAB = const(0x1E00)
_IDX = const(0x1FF)
_END = const(0x1E00)  # step 0, table 15: no such table

_HINTS = const(3)  # hinted multiples 2^64 Q, 2^128 Q, 2^192 Q

PIN_WINDOW = const(5)  # pinned keys (issuers): twice the table, ~8 fewer additions
PIN_KEYS = const(4)  # pinned tables kept (4 KB each); more pins fall back to the LRU

_cache = []  # [key bytes, affine Q table], most recent first
_pinned = []  # [key bytes, affine Q table] of pinned keys, never evicted
_spare = []  # tables the LRU let go of, reused: no new long-lived blocks once it is full
_gtab = None
_native = None  # pos.p256_native while the native backend is in use


def use(backend):
    """Select the field arithmetic: "native" (viper) or "mpz" (big ints).
    Returns the one in use. "native" needs a port that runs viper code for its
    architecture and an engine that passes its known-answer check; when it
    cannot load (no native emitter, another arch, no memory for the code), this
    stays on "mpz" and says so: it never raises for that."""
    global _native
    _native = None
    if backend == "native":
        try:
            from pos import p256_native

            if p256_native.init():
                _native = p256_native
        except (ImportError, SyntaxError, ValueError, MemoryError, NotImplementedError):
            pass
    return "native" if _native is not None else "mpz"


def _inv(a, m):
    if _native is not None:
        x = _native.inverse(a, m)
        if x is not None:
            return x
    return _inv_mpz(a, m)


def _inv_mpz(a, m):
    # Extended Euclid: ~5x faster than pow(a, m-2, m) here; MicroPython's
    # pow(a, -1, m) silently returns 0, so it must not be used.
    x0 = 0
    x1 = 1
    r0 = m
    r1 = a % m
    while r1:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        x0, x1 = x1, x0 - q * x1
    if r0 != 1:
        raise ValueError("not invertible")
    return x0 % m


def decode_point(pub):
    """SEC1 uncompressed/compressed bytes -> (x, y) on the curve, or None."""
    p = _P
    n = len(pub)
    if n == 65 and pub[0] == 4:
        x = int.from_bytes(pub[1:33], "big")
        y = int.from_bytes(pub[33:], "big")
        if x >= p or y >= p or (y * y - x * (x * x - 3) - _B) % p:
            return None
        return x, y
    if n == 33 and (pub[0] == 2 or pub[0] == 3):
        x = int.from_bytes(pub[1:], "big")
        if x >= p:
            return None
        c = (x * (x * x - 3) + _B) % p
        y = pow(c, _SQRT_EXP, p)
        if y * y % p != c:
            return None  # x is not on the curve
        if (y ^ pub[0]) & 1:
            y = p - y
        return x, y
    return None


def _double_n(X, Y, Z, n):
    # n Jacobian doublings, a = -3 (dbl-2001-b); used to walk Q to 2^(k*_L)*Q.
    p = _P
    for _ in range(n):
        d = Z * Z % p
        g = Y * Y % p
        b = X * g % p
        a = 3 * (X - d) * (X + d) % p
        X = (a * a - (b << 3)) % p
        Z = (Y + Y) * Z % p
        Y = (a * ((b << 2) - X) - (g * g << 3)) % p  # g^2 unreduced: one % fewer
    return X, Y, Z


def _window(t, c=_C):
    # A table's wNAF width, from its size: 2^(w-2) odd multiples per chunk.
    e = len(t) // (64 * c)
    w = 2
    while (1 << (w - 2)) < e:
        w += 1
    return w


def _table(x, y, chunks=_C, bases=None, w=Q_WINDOW, out=None):
    """Affine odd multiples d*2^(k*_L)*Q for k < chunks, x||y 64 bytes each, in
    the G table's layout. With `bases` (affine points for chunks 1.., e.g. the
    issuer's hints) chunk k starts at bases[k-1] instead of doubling up to it."""
    if _native is not None:
        return _native.table(x, y, chunks, bases, w, out, _L)
    p = _P
    h = 1 << (w - 2)  # odd multiples per chunk
    # One bytearray per key rather than 64 ints: long-lived ints scattered
    # through the heap fragment it until big RSA temporaries no longer fit.
    # Allocated first, before the temporaries below are strewn over the heap.
    if out is None:
        out = bytearray(64 * chunks * h)
    xs = []  # Jacobian X, Y of every multiple; Z implied by zs/es below
    ys = []
    es = []  # Z of multiple j+1 = Z of multiple j * es[j] (co-Z additions)
    zs = []  # Z of each chunk's first multiple
    X, Y, Z = x, y, 1
    for k in range(chunks):
        # Doubling that also returns P rescaled to the result's Z (DBLU):
        # 4b = X*(2Y)^2 and 8g^2 = Y*(2Y)^3 fall out of the formula.
        d = Z * Z % p
        g = Y * Y % p
        b = X * g % p
        a = 3 * (X - d) * (X + d) % p
        DX = (a * a - (b << 3)) % p
        Z = (Y + Y) * Z % p
        g = g * g % p
        DY = (a * (4 * b - DX) - 8 * g) % p
        X = 4 * b % p
        Y = 8 * g % p
        zs.append(Z)
        if k < chunks - 1:
            if bases is None:
                NX, NY, NZ = _double_n(DX, DY, Z, _L - 1)  # next chunk: 2^L * P from 2P
            else:
                NX, NY = bases[k]
                NZ = 1
        # Odd multiples by co-Z additions (Meloni ZADDU, 5M+2S): M += D,
        # D rescaled to the sum's Z, the Z factor e kept instead of Z itself.
        xs.append(X)
        ys.append(Y)
        for _ in range(h - 1):
            e = DX - X
            c = e * e % p
            w1 = DX * c % p
            w2 = X * c % p
            f = DY - Y
            a1 = DY * (w1 - w2) % p
            X = (f * f - w1 - w2) % p
            Y = (f * (w1 - X) - a1) % p
            DX = w1
            DY = a1
            xs.append(X)
            ys.append(Y)
            es.append(e)
        if k < chunks - 1:
            X, Y, Z = NX, NY, NZ
    # Z of each chunk's last multiple; invert all _C of them with one
    # inversion (Montgomery's trick), then walk back down each chunk.
    zl = []
    for k in range(chunks):
        z = zs[k]
        for j in range(k * (h - 1), (k + 1) * (h - 1)):
            z = z * es[j] % p
        zl.append(z)
    acc = 1
    pre = []
    for z in zl:
        pre.append(acc)
        acc = acc * z % p
    inv = _inv(acc, p)
    for k in range(chunks - 1, -1, -1):
        zi = inv * pre[k] % p  # 1 / Z of the chunk's last multiple
        inv = inv * zl[k] % p
        for j in range(h - 1, -1, -1):
            i = k * h + j
            z2 = zi * zi % p
            o = 64 * i
            out[o : o + 32] = (xs[i] * z2 % p).to_bytes(32, "little")
            out[o + 32 : o + 64] = (ys[i] * (z2 * zi % p) % p).to_bytes(32, "little")
            if j:
                zi = zi * es[k * (h - 1) + j - 1] % p
    return out


def _cached(pub):
    for e in _pinned:
        if e[0] == pub:
            return e[1]
    c = _cache
    for i in range(len(c)):
        if c[i][0] == pub:
            e = c[i]
            if i:
                c.pop(i)
                c.insert(0, e)
            return e[1]
    return None


def key_table(pub, pin=False):
    """The cached Q table for `pub` (bytes), building it if needed; None if
    invalid. pin: keep it for good, with a wider window (for the few keys that
    verify every first-seen wallet: the issuers'), while fewer than PIN_KEYS are."""
    pin = pin and len(_pinned) < PIN_KEYS
    t = _cached(pub)
    if t is not None and (not pin or _window(t) == PIN_WINDOW):
        return t
    pt = decode_point(pub)
    if pt is None:
        return None
    if pin:
        for i in range(len(_cache)):
            if _cache[i][0] == pub:
                _cache.pop(i)
                break
        t = _table(pt[0], pt[1], _C, None, PIN_WINDOW)
        _pinned.append([pub, t])
        return t
    c = _cache
    if len(c) >= CACHE_KEYS:
        _spare.append(c.pop()[1])
    t = _table(pt[0], pt[1], _C, None, Q_WINDOW, _spare.pop() if _spare else None)
    c.insert(0, [pub, t])
    return t


def reserve():
    """Allocate the LRU's tables now (at boot, while the heap is in one piece)."""
    while len(_spare) + len(_cache) < CACHE_KEYS:
        _spare.append(bytearray(64 * _C << (Q_WINDOW - 2)))


def shed():
    """Forget the LRU's tables and give their memory back (pinned ones stay)."""
    del _cache[:]
    del _spare[:]


def is_warm(pub):
    for c in (_pinned, _cache):
        for e in c:
            if e[0] == pub:
                return True
    return False


def _schedule(k, w, tag, step, out, l=_L, c=_C):
    # Append width-w NAF digits of k as schedule entries; a digit in chunk ck
    # (of c chunks of l bits) gets tag + ck * step | (|d| >> 1). Reads the
    # scalar a byte pair at a time so all the work is on small ints.
    kb = k.to_bytes(36, "little")
    full = 1 << w
    mask = full - 1
    half = full >> 1
    i = 0
    carry = 0
    while i < 256 or carry:
        x = (kb[i >> 3] | kb[(i >> 3) + 1] << 8) >> (i & 7)
        v = x + carry
        if v & 1:
            d = v & mask
            if d >= half:
                d -= full
            carry = ((x & mask) + carry - d) >> w
            ck = i // l
            if ck >= c:
                ck = c - 1
            e = (i - ck * l) << _STEP | (tag + ck * step + ((d if d > 0 else -d) >> 1))
            out.append(e | _NEG if d < 0 else e)
            i += w
        else:
            t = 1
            while not (v >> t) & 1 and t < 8:
                t += 1
            carry = ((x & ((1 << t) - 1)) + carry) >> t
            i += t


def _g():
    global _gtab
    if _gtab is None:
        from pos import p256_gtab

        if p256_gtab.C != _C or p256_gtab.L != _L:
            raise ImportError("p256_gtab chunking does not match p256")
        _gtab = p256_gtab
    return _gtab


def mul2_check(u1, u2, qt, r, l=_L, c=_C):
    """True iff x(u1*G + u2*Q) mod n == r, where qt is Q's table of c chunks of
    l bits (the full one, or one built on the issuer's hints)."""
    g = _g()
    tabs = [memoryview(qt)]
    for t in g.G:
        tabs.append(memoryview(t))
    w = _window(qt, c)
    return _mul2(u1, (g.W, 1 << 9, 1 << 9, _L, _C), u2, (w, 0, 1 << (w - 2), l, c), tabs, r)


def mul2_check_cold(u1, u2, x, y, r):
    """mul2_check for a key without a table: one 256-step chunk, Q's small
    odd multiples built here and dropped."""
    g = _g()
    tabs = [memoryview(_table(x, y, 1)), memoryview(g.G[0])]
    return _mul2(u1, (g.W, 1 << 9, 0, 1024, 1), u2, (Q_WINDOW, 0, 0, 1024, 1), tabs, r)


def _mul2(u1, ga, u2, qa, tabs, r):
    # ga, qa: _schedule's (w, tag, step, l, c) for u1 (G's tables) and u2 (Q's).
    if _native is not None:
        ok = _native.mul2(u1, ga, u2, qa, tabs, r)
        if ok is not None:
            return ok
    sched = []
    _schedule(u1, ga[0], ga[1], ga[2], sched, ga[3], ga[4])
    _schedule(u2, qa[0], qa[1], qa[2], sched, qa[3], qa[4])
    return _run(sched, tabs, r)


def _run(sched, tabs, r):
    # The accumulator loop over schedule entries, highest step first.
    if not sched:
        return False
    sched.sort(reverse=True)
    sched.append(_END)
    if _native is not None:
        ok = _native.run(sched, tabs, r)
        if ok is not None:
            return ok
        # A degenerate addition (the accumulator met +-the point it added):
        # the loop below handles those.
    return _run_mpz(sched, tabs, r)


def _run_mpz(sched, tabs, r):
    p = _P
    fb = int.from_bytes
    X = Y = Z = 0  # Z == 0: point at infinity
    cur = sched[0] >> _STEP
    for c in sched:
        j = c >> _STEP
        for _ in range(cur - j):
            # Doubling as in _double_n; Z == 0 (infinity) stays 0.
            d = Z * Z % p
            g = Y * Y % p
            b = X * g % p
            a = 3 * (X - d) * (X + d) % p
            X = (a * a - (b << 3)) % p
            Z = (Y + Y) * Z % p
            Y = (a * ((b << 2) - X) - (g * g << 3)) % p
        cur = j
        if c == _END:
            break
        i = (c & _IDX) << 6
        m = tabs[(c & _TAB) >> 9]
        x2 = fb(m[i : i + 32], "little")
        y2 = fb(m[i + 32 : i + 64], "little")
        if c & _NEG:
            y2 = p - y2
        if not Z:
            X = x2
            Y = y2
            Z = 1
            continue
        # Mixed addition, Jacobian + affine (8M + 3S).
        zz = Z * Z % p
        h = x2 * zz % p - X
        rr = y2 * (Z * zz % p) % p - Y
        if not h:
            if rr:
                Z = 0  # P + (-P)
                continue
            X, Y, Z = _double_n(x2, y2, 1, 1)  # P + P
            continue
        hh = h * h % p
        hhh = h * hh % p
        v = X * hh % p
        X = (rr * rr - hhh - v - v) % p
        Y = (rr * (v - X) - Y * hhh) % p
        Z = Z * h % p
    if not Z:
        return False
    # x(R) = X/Z^2; compare without inverting. x mod n == r also holds for
    # x = r + n when that is still below p.
    zz = Z * Z % p
    if r * zz % p == X:
        return True
    r += _N
    return r < p and r * zz % p == X


def _hint_points(hints):
    # The issuer's 2^(64k)*Q, k = 1..3: three uncompressed points, each on the
    # curve (decode_point checks), or None.
    if len(hints) != 65 * _HINTS:
        return None
    out = []
    for k in range(_HINTS):
        pt = decode_point(hints[65 * k:65 * k + 65])
        if pt is None or hints[65 * k] != 4:
            return None
        out.append(pt)
    return out


def hints_match(pub, hints):
    """True if `hints` are what `pub`'s table (built by warm()) says 2^64 Q,
    2^128 Q and 2^192 Q are; None when the key has no table."""
    t = _cached(pub)
    if t is None:
        return None
    hints = bytes(hints)
    h = 1 << (_window(t) - 2)
    step = 64 // _L  # chunks per 64 bits
    fb = int.from_bytes
    for k in range(1, _HINTS + 1):
        o = 64 * h * step * k  # first entry of chunk step*k: 2^(64k) Q
        a = 65 * (k - 1) + 1
        if fb(t[o:o + 32], "little") != fb(hints[a:a + 32], "big") or \
                fb(t[o + 32:o + 64], "little") != fb(hints[a + 32:a + 64], "big"):
            return False
    return True


def _rs(h, sig):
    # (r, s) of a well-formed signature over a 32-byte digest, else None.
    if len(sig) != 64 or len(h) != 32:
        return None
    n = _N
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < n and 0 < s < n):
        return None
    return r, s


def _check(pub, h, r, w, hints):
    # The verification proper, given w = 1/s mod n.
    qt = _cached(pub)
    if qt is None:
        pt = decode_point(pub)
        if pt is None:
            return False
        if hints is not None:
            bases = _hint_points(hints)
            if bases is None:
                return False
    n = _N
    u1 = int.from_bytes(h, "big") * w % n
    u2 = r * w % n
    if qt is not None:
        return mul2_check(u1, u2, qt, r)
    if hints is not None:
        # Q's table of 4 chunks of 64 bits, each starting at a hint: 64 steps.
        qt = _table(pt[0], pt[1], _HINTS + 1, bases)
        return mul2_check(u1, u2, qt, r, 256 // (_HINTS + 1), _HINTS + 1)
    return mul2_check_cold(u1, u2, pt[0], pt[1], r)


def verify_digest(pub, h, sig, hints=None):
    """ECDSA verify of a 32-byte digest h; pub and sig are bytes. Never raises on bad input.

    hints: None, or the credential's 2^64 Q, 2^128 Q, 2^192 Q (uncompressed,
    195 bytes, issuer-signed): used for a key without a table, they cut the
    doublings from 256 to 64. Malformed hints make the check fail."""
    rs = _rs(h, sig)
    if rs is None:
        return False
    return _check(pub, h, rs[0], _inv(rs[1], _N), hints)


def verify_digests(a, b):
    """Two verify_digest() calls, a and b each (pub, h, sig, hints), sharing one
    inversion (Montgomery's trick: 1/s_a and 1/s_b from 1/(s_a*s_b)), as a
    first-seen wallet's issuer and device signatures do. Returns (ok_a, ok_b)."""
    ra = _rs(a[1], a[2])
    rb = _rs(b[1], b[2])
    if ra is None or rb is None:
        return (ra is not None and verify_digest(*a)), (rb is not None and verify_digest(*b))
    n = _N
    inv = _inv(ra[1] * rb[1] % n, n)
    return (_check(a[0], a[1], ra[0], rb[1] * inv % n, a[3]),
            _check(b[0], b[1], rb[0], ra[1] * inv % n, b[3]))
