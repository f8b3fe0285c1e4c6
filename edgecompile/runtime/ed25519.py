"""Ed25519 signature verification (RFC 8032, section 5.1.7) in plain Python, for devices without
the ``cryptography`` package.

Verification only: it handles public data (key, message, signature), so it holds no secret and
timing does not matter. :func:`edgecompile.runtime.signature.verify` prefers ``cryptography``
(OpenSSL) where it is installed and falls back to this; the tests check both agree on valid,
tampered and malformed signatures. About 10 ms per verification (two 253-bit scalar
multiplications on Python integers), once per load.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a: tuple, b: tuple) -> tuple:
    """Sum of two points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    e0 = (y1 - x1) * (y2 - x2) % P
    e1 = (y1 + x1) * (y2 + x2) % P
    c = t1 * 2 * D * t2 % P
    d = z1 * 2 * z2 % P
    e, f, g, h = e1 - e0, d - c, d + c, e1 + e0
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k: int, point: tuple) -> tuple:
    """``k`` times ``point`` by double-and-add (the addition formula is complete: it doubles too)."""
    acc = (0, 1, 1, 0)
    while k:
        if k & 1:
            acc = _add(acc, point)
        point = _add(point, point)
        k >>= 1
    return acc


def _recover_x(y: int, sign: int) -> int | None:
    """The x of the curve point with this y and low bit ``sign``, or None if there is none."""
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if x & 1 != sign else x


def _decode(data: bytes) -> tuple | None:
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def _encode(point: tuple) -> bytes:
    x, y, z, _ = point
    zinv = pow(z, P - 2, P)
    x, y = x * zinv % P, y * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


_BY = 4 * pow(5, P - 2, P) % P
BASE = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % P)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` (64 bytes) is ``public_key``'s (32 bytes) Ed25519 signature of ``message``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode(public_key)
    r_bytes, s = signature[:32], int.from_bytes(signature[32:], "little")
    if a is None or s >= L or _decode(r_bytes) is None:
        return False
    h = int.from_bytes(hashlib.sha512(r_bytes + public_key + message).digest(), "little") % L
    minus_a = ((P - a[0]) % P, a[1], a[2], (P - a[3]) % P)
    return _encode(_add(_mul(s, BASE), _mul(h, minus_a))) == r_bytes
