"""Seed statistics, math only: mean/std and a one-sided Welch t-test (folders are compared in ``pgolf.compare``).

The Student t tail uses the regularized incomplete beta function, evaluated with the continued fraction of
Numerical Recipes (``betacf``): for T with df degrees of freedom and t >= 0, P(T > t) = I_x(df/2, 1/2) / 2 with
x = df / (df + t^2).
"""

from __future__ import annotations

import math


def mean(xs: list[float]) -> float:
    """Arithmetic mean (ValueError on an empty list)."""
    if not xs:
        raise ValueError("mean of no values")
    return math.fsum(xs) / len(xs)


def std(xs: list[float]) -> float | None:
    """Sample standard deviation (n - 1 in the denominator); None with fewer than two values."""
    if len(xs) < 2:
        return None
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _betacf(a: float, b: float, x: float, max_iter: int = 10_000, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes ``betacf``)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise RuntimeError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError("betainc needs a > 0 and b > 0")
    if not 0.0 <= x <= 1.0:
        raise ValueError("betainc needs 0 <= x <= 1")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for a Student t variable with ``df`` degrees of freedom (the one-sided p-value of t)."""
    if df <= 0:
        raise ValueError("df must be positive")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def welch_one_sided(a: list[float], b: list[float]) -> dict:
    """One-sided Welch t-test that mean(a) < mean(b) (lower is better).

    Returns {"t", "df", "p_value", "reason"}; t/df/p are None, with the reason, when they cannot be computed
    (fewer than two values on a side, or no variance on either side).
    """
    out: dict = {"t": None, "df": None, "p_value": None, "reason": None}
    if len(a) < 2 or len(b) < 2:
        out["reason"] = (
            f"p-value cannot be computed: a t-test needs at least 2 seeds per side (A has {len(a)}, B has {len(b)})"
        )
        return out
    va, vb = std(a) ** 2 / len(a), std(b) ** 2 / len(b)
    if va + vb == 0.0:
        out["reason"] = "p-value cannot be computed: both sides have zero variance across seeds"
        return out
    t = (mean(b) - mean(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    out.update(t=t, df=df, p_value=t_sf(t, df))
    return out
