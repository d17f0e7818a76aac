"""BG/NBD: how many repeat purchases a customer will make, and whether they are still "alive".

The beta-geometric/negative-binomial distribution model of Fader, Hardie & Lee (2005),
"Counting Your Customers the Easy Way", *Marketing Science* 24(2). While alive a customer buys
as a Poisson process with rate λ ~ Gamma(r, α); after every purchase they drop out with
probability p ~ Beta(a, b). Data per customer: ``frequency`` x (repeat purchases, i.e. purchase
days after the first), ``recency`` t_x (time of the last purchase since the first) and ``T``
(time since the first purchase), all in one time unit (weeks in the paper).

Per-customer log-likelihood (paper, eq. 6)::

    A1 = lnΓ(r+x) - lnΓ(r) + r ln α
    A2 = lnΓ(a+b) + lnΓ(b+x) - lnΓ(b) - lnΓ(a+b+x)
    A3 = -(r+x) ln(α+T)
    A4 = ln a - ln(b+x-1) - (r+x) ln(α+t_x)          (only when x > 0)
    LL = A1 + A2 + ln(exp(A3) + [x > 0] exp(A4))
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt
from scipy import special

from funnelscope.errors import Problem
from funnelscope.models.clv.base import CLVModel, FloatArray, as_float_array, nonnegative_problems

__all__ = ["BetaGeoModel", "churn_risk_tier"]

#: P(alive) at or above this is "low" churn risk; below :data:`HIGH_RISK_BELOW` is "high".
LOW_RISK_FROM = 0.7
HIGH_RISK_BELOW = 0.3


class BetaGeoModel(CLVModel):
    """The BG/NBD model, fitted by maximum likelihood.

    Examples
    --------
    >>> m = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
    >>> round(float(m.expected_purchases(39, frequency=2, recency=30.43, T=38.86)[0]), 3)
    1.226
    >>> round(float(m.probability_alive(frequency=0, recency=0, T=38.86)[0]), 3)
    1.0
    """

    param_names: ClassVar[tuple[str, ...]] = ("r", "alpha", "a", "b")
    data_columns: ClassVar[tuple[str, ...]] = ("frequency", "recency", "T")

    def _validate(self, data: tuple[FloatArray, ...]) -> list[Problem]:
        x, t_x, big_t = data
        problems = [
            *nonnegative_problems("frequency", x),
            *nonnegative_problems("recency", t_x),
            *nonnegative_problems("T", big_t),
        ]
        if problems:
            return problems
        if np.any(x != np.floor(x)):
            problems.append(Problem("clv.bad_value", "frequency", "frequency must be whole"))
        late = t_x > big_t + 1e-9
        if late.any():
            problems.append(
                Problem(
                    "clv.recency_after_T",
                    "recency",
                    f"recency must be <= T; {int(late.sum())} rows are not",
                )
            )
        ghost = (x == 0) & (t_x != 0)
        if ghost.any():
            problems.append(
                Problem(
                    "clv.recency_without_repeat",
                    "recency",
                    f"recency must be 0 when frequency is 0; {int(ghost.sum())} rows are not",
                )
            )
        return problems

    def _log_likelihood(
        self, params: FloatArray, data: tuple[FloatArray, ...]
    ) -> tuple[FloatArray, FloatArray]:
        r, alpha, a, b = params
        x, t_x, big_t = data
        has = x > 0
        # x-only terms: x is a whole number, so each term is computed once per value 0..max(x)
        inv = x.astype(np.int64)
        xs = np.arange(inv.max() + 1, dtype=np.float64)
        a1 = (special.gammaln(r + xs) - special.gammaln(r))[inv] + r * np.log(alpha)
        a2 = (
            special.gammaln(a + b)
            + (special.gammaln(b + xs) - special.gammaln(b) - special.gammaln(a + b + xs))[inv]
        )
        log_at = np.log(alpha + big_t)
        log_atx = np.log(alpha + t_x)
        a3 = -(r + x) * log_at
        bx1 = np.where(has, b + x - 1.0, 1.0)
        a4 = np.where(has, np.log(a) - np.log(bx1) - (r + x) * log_atx, -np.inf)
        mix = np.logaddexp(a3, a4)
        ll = a1 + a2 + mix
        w4 = np.exp(a4 - mix)  # share of the "dropped out after the last purchase" branch
        w3 = 1.0 - w4
        dig_rx = special.digamma(r + xs)[inv]
        g_r = dig_rx - special.digamma(r) + np.log(alpha) - w3 * log_at - w4 * log_atx
        g_alpha = r / alpha - w3 * (r + x) / (alpha + big_t) - w4 * (r + x) / (alpha + t_x)
        dig_abx = special.digamma(a + b + xs)[inv]
        g_a = special.digamma(a + b) - dig_abx + w4 / a
        g_b = (
            special.digamma(a + b)
            + (special.digamma(b + xs) - special.digamma(b))[inv]
            - dig_abx
            - w4 / bx1
        )
        return ll, np.column_stack([g_r, g_alpha, g_a, g_b])

    # -- predictions ---------------------------------------------------------------------
    def _log_odds_dead(
        self,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        r, alpha, a, b = self._param_array()
        x = as_float_array(frequency, "frequency")
        t_x = as_float_array(recency, "recency")
        big_t = as_float_array(T, "T")
        x, t_x, big_t = np.broadcast_arrays(x, t_x, big_t)
        has = x > 0
        bx1 = np.where(has, b + x - 1.0, 1.0)
        log_odds = np.where(
            has,
            np.log(a) - np.log(bx1) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x)),
            -np.inf,
        )
        return log_odds, x, t_x, big_t

    def probability_alive(
        self,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
    ) -> FloatArray:
        """P(alive at T | x, t_x, T). Exactly 1 for customers without repeat purchases.

        Examples
        --------
        >>> m = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> round(float(m.probability_alive(1, 1.71, 38.86)[0]), 2)
        0.21
        """
        log_odds, *_ = self._log_odds_dead(frequency, recency, T)
        return np.asarray(special.expit(-log_odds), dtype=np.float64)

    def expected_purchases(
        self,
        t: npt.ArrayLike,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` time units (paper eq. 10).

        Examples
        --------
        >>> m = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> round(float(m.expected_purchases(39, 0, 0, 38.86)[0]), 3)
        0.195
        """
        r, alpha, a, b = self._param_array()
        log_odds, x, _, big_t = self._log_odds_dead(frequency, recency, T)
        t_arr = as_float_array(t, "t")
        t_arr, x, big_t, log_odds = np.broadcast_arrays(t_arr, x, big_t, log_odds)
        z = t_arr / (alpha + big_t + t_arr)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1.0, z)
        tail = np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + t_arr))) * hyp
        head = (a + b + x - 1.0) / (a - 1.0)
        return np.asarray(head * (1.0 - tail) * special.expit(-log_odds), dtype=np.float64)

    def expected_purchases_new_customer(self, t: npt.ArrayLike) -> FloatArray:
        """E[X(t)]: expected repeat purchases of a new customer in ``t`` time units (eq. 9).

        Examples
        --------
        >>> m = BetaGeoModel.from_params(r=0.2425945, alpha=4.4136019, a=0.7929199, b=2.4258881)
        >>> round(float(m.expected_purchases_new_customer(1)[0]), 4)
        0.0532
        """
        r, alpha, a, b = self._param_array()
        t_arr = as_float_array(t, "t")
        hyp = special.hyp2f1(r, b, a + b - 1.0, t_arr / (alpha + t_arr))
        base = (alpha / (alpha + t_arr)) ** r
        return np.asarray((a + b - 1.0) / (a - 1.0) * (1.0 - base * hyp), dtype=np.float64)

    def probability_of_purchases(self, n: npt.ArrayLike, t: float) -> FloatArray:
        """P(X(t) = n): probability that a new customer makes ``n`` purchases in ``t`` (eq. 8).

        Examples
        --------
        >>> m = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
        >>> round(float(m.probability_of_purchases(0, 39)[0]), 4)
        0.5738
        """
        r, alpha, a, b = self._param_array()
        ns = as_float_array(n, "n")
        log_q = np.log(t / (alpha + t))
        log_base = r * np.log(alpha / (alpha + t))
        log_beta_ab = special.betaln(a, b)

        def log_nbd_term(j: FloatArray) -> FloatArray:
            # ln[Γ(r+j) / (Γ(r) j!)] + j ln(t / (α+t))
            out = special.gammaln(r + j) - special.gammaln(r) - special.gammaln(j + 1.0)
            return np.asarray(out + j * log_q, dtype=np.float64)

        first = np.exp(special.betaln(a, b + ns) - log_beta_ab + log_nbd_term(ns) + log_base)
        out = first.copy()
        for i, k in enumerate(ns):
            if k <= 0:
                continue
            js = np.arange(int(k), dtype=np.float64)
            partial = np.exp(log_nbd_term(js)).sum()
            weight = np.exp(special.betaln(a + 1.0, b + k - 1.0) - log_beta_ab)
            out[i] += weight * (1.0 - np.exp(log_base) * partial)
        return np.asarray(out, dtype=np.float64)


def churn_risk_tier(probability_alive: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """Churn-risk tier from P(alive): ``low`` (>= 0.7), ``medium`` (0.3 to 0.7), ``high`` (< 0.3).

    Examples
    --------
    >>> churn_risk_tier([0.95, 0.5, 0.1]).tolist()
    ['low', 'medium', 'high']
    """
    p = np.asarray(probability_alive, dtype=np.float64)
    return np.where(p >= LOW_RISK_FROM, "low", np.where(p < HIGH_RISK_BELOW, "high", "medium"))
