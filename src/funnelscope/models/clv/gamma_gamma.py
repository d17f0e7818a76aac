"""Gamma-Gamma: how much a customer spends per transaction, and their discounted lifetime value.

Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base Analysis",
*JMR* 42(4); Fader & Hardie (2013), note 025. Each transaction's value is Gamma(p, ν) with
ν ~ Gamma(q, γ) across customers, so a customer's mean spend m̄ over x transactions has the
per-customer log-likelihood (the full density of m̄, which matches CLVTools' -4055.9177 on
CDNOW)::

    lnΓ(px+q) - lnΓ(px) - lnΓ(q) + q ln γ + (px-1) ln m̄ + px ln x - (px+q) ln(γ + m̄ x)

Only customers with x > 0 repeat transactions inform the fit. The model assumes spend is
independent of the purchase process: check that corr(x, m̄) is small before relying on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from scipy import special

from funnelscope.errors import InvalidInputError, Problem
from funnelscope.models.clv.base import CLVModel, FloatArray, as_float_array, nonnegative_problems
from funnelscope.models.clv.bg_nbd import BetaGeoModel

__all__ = [
    "DEFAULT_CLV_CONVENTION",
    "LIFETIMES_CLV_CONVENTION",
    "CLVConvention",
    "GammaGammaModel",
]

WEEKS_PER_MONTH: Final = 52.0 / 12.0


@dataclass(frozen=True, slots=True)
class CLVConvention:
    """How a lifetime value is discounted: ``periods`` periods of ``period_length`` time units.

    CLV = Σ_{i=1..periods} E[M] × (E[Y(i·L)] − E[Y((i−1)·L)]) / (1 + d)^i, with L the period
    length in the model's time unit and d the discount rate per period: each period's expected
    purchases are valued at the customer's expected spend and discounted at the period's end.

    Attributes
    ----------
    periods
        How many periods the horizon spans.
    period_length
        One period in the model's time unit (weeks for CDNOW).
    discount_rate
        Discount rate per period (0.01 = 1 % a period).
    """

    periods: int
    period_length: float
    discount_rate: float

    def problems(self) -> list[Problem]:
        found = []
        if self.periods < 1:
            found.append(Problem("clv.bad_periods", "periods", "periods must be >= 1"))
        if not self.period_length > 0:
            found.append(Problem("clv.bad_period_length", "period_length", "must be > 0"))
        if not -1 < self.discount_rate < 10:
            found.append(Problem("clv.bad_discount_rate", "discount_rate", "must be in (-1, 10)"))
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "periods": self.periods,
            "period_length": self.period_length,
            "discount_rate": self.discount_rate,
        }


#: 12 months of 52/12 weeks, 10 % a year compounded monthly (time unit: weeks).
DEFAULT_CLV_CONVENTION: Final = CLVConvention(12, WEEKS_PER_MONTH, 1.10 ** (1 / 12) - 1)
#: lifetimes' ``customer_lifetime_value(time=12, discount_rate=0.01, freq="W")``: 12 months of
#: 4.345 weeks at 1 % a month. The published CDNOW CLV column uses this convention.
LIFETIMES_CLV_CONVENTION: Final = CLVConvention(12, 4.345, 0.01)


class GammaGammaModel(CLVModel):
    """The Gamma-Gamma spend model, fitted by maximum likelihood on repeat customers.

    Examples
    --------
    >>> gg = GammaGammaModel.from_params(p=6.25, q=3.74, gamma=15.44)
    >>> round(float(gg.expected_spend(frequency=0, monetary_value=0)[0]), 2)
    35.22
    """

    param_names: ClassVar[tuple[str, ...]] = ("p", "q", "gamma")
    data_columns: ClassVar[tuple[str, ...]] = ("frequency", "monetary_value")

    def _validate(self, data: tuple[FloatArray, ...]) -> list[Problem]:
        x, m = data
        problems = [
            *nonnegative_problems("frequency", x),
            *nonnegative_problems("monetary_value", m),
        ]
        if not problems:
            zero = (x > 0) & (m <= 0)
            if zero.any():
                problems.append(
                    Problem(
                        "clv.bad_value",
                        "monetary_value",
                        f"monetary_value must be > 0 for repeat customers; {int(zero.sum())} "
                        "rows are not (drop or fix refunds and free orders first)",
                    )
                )
        return problems

    def _fit_rows(self, data: tuple[FloatArray, ...]) -> tuple[FloatArray, ...]:
        x, m = data
        keep = x > 0
        return x[keep], m[keep]

    def _log_likelihood(
        self, params: FloatArray, data: tuple[FloatArray, ...]
    ) -> tuple[FloatArray, FloatArray]:
        p, q, gamma = params
        x, m = data
        px = p * x
        log_g_mx = np.log(gamma + m * x)
        log_m = np.log(m)
        # x-only terms (x is a whole number >= 1): computed once per value, then gathered
        inv = x.astype(np.int64)
        pxs = p * np.arange(inv.max() + 1, dtype=np.float64)
        pxs[0] = 1.0  # unused (x > 0); avoids lnΓ(0)
        xs = np.maximum(np.arange(inv.max() + 1, dtype=np.float64), 1.0)
        ln_ratio = (special.gammaln(pxs + q) - special.gammaln(pxs) + pxs * np.log(xs))[inv]
        dig_pxq = special.digamma(pxs + q)[inv]
        dig_px = special.digamma(pxs)[inv]
        ll = (
            ln_ratio
            - special.gammaln(q)
            + q * np.log(gamma)
            + (px - 1.0) * log_m
            - (px + q) * log_g_mx
        )
        g_p = x * (dig_pxq - dig_px + log_m + np.log(xs)[inv] - log_g_mx)
        g_q = dig_pxq - special.digamma(q) + np.log(gamma) - log_g_mx
        g_gamma = q / gamma - (px + q) / (gamma + m * x)
        return ll, np.column_stack([g_p, g_q, g_gamma])

    # -- predictions ---------------------------------------------------------------------
    def expected_spend(self, frequency: npt.ArrayLike, monetary_value: npt.ArrayLike) -> FloatArray:
        """E[M | x, m̄]: a customer's expected mean spend per transaction.

        A weighted average of the population mean pγ/(q−1) and the customer's own m̄, the weight
        on m̄ growing with x. Customers without repeat purchases get the population mean.

        Examples
        --------
        >>> gg = GammaGammaModel.from_params(p=6.25, q=3.74, gamma=15.44)
        >>> round(float(gg.expected_spend(frequency=2, monetary_value=22.35)[0]), 2)
        24.66
        """
        p, q, gamma = self._param_array()
        x = as_float_array(frequency, "frequency")
        m = as_float_array(monetary_value, "monetary_value")
        x, m = np.broadcast_arrays(x, m)
        return np.asarray(p * (gamma + m * x) / (p * x + q - 1.0), dtype=np.float64)

    def population_mean_spend(self) -> float:
        """E[Z] = pγ / (q − 1), the mean spend per transaction across customers (q > 1)."""
        p, q, gamma = self._param_array()
        return float(p * gamma / (q - 1.0)) if q > 1 else float("inf")

    def customer_lifetime_value(
        self,
        transactions: BetaGeoModel,
        frequency: npt.ArrayLike,
        recency: npt.ArrayLike,
        T: npt.ArrayLike,
        monetary_value: npt.ArrayLike,
        convention: CLVConvention = DEFAULT_CLV_CONVENTION,
    ) -> FloatArray:
        """Discounted expected value of future purchases (see :class:`CLVConvention`).

        ``transactions`` is the fitted BG/NBD model that predicts the purchases; this model
        values each of them at E[M | x, m̄].

        Examples
        --------
        >>> bg = BetaGeoModel.from_params(r=0.242593, alpha=4.413532, a=0.792886, b=2.425754)
        >>> gg = GammaGammaModel.from_params(p=6.248802, q=3.744588, gamma=15.447748)
        >>> clv = gg.customer_lifetime_value(bg, 2, 30.43, 38.86, 22.35, LIFETIMES_CLV_CONVENTION)
        >>> round(float(clv[0]), 2)
        36.28
        """
        problems = convention.problems()
        if problems:
            raise InvalidInputError(problems)
        spend = self.expected_spend(frequency, monetary_value)
        x, t_x, big_t = np.broadcast_arrays(
            as_float_array(frequency, "frequency"),
            as_float_array(recency, "recency"),
            as_float_array(T, "T"),
        )
        x, t_x, big_t = (np.broadcast_to(a, spend.shape) for a in (x, t_x, big_t))
        # the discounted purchase count depends on (x, t_x, T) only: compute it once per
        # distinct history (customers share them), then value it at each customer's spend
        rows, inverse = np.unique(np.column_stack([x, t_x, big_t]), axis=0, return_inverse=True)
        discounted = np.zeros(len(rows))
        previous = np.zeros(len(rows))
        for i in range(1, convention.periods + 1):
            cumulative = transactions.expected_purchases(
                i * convention.period_length, rows[:, 0], rows[:, 1], rows[:, 2]
            )
            discounted += (cumulative - previous) / (1.0 + convention.discount_rate) ** i
            previous = cumulative
        return np.asarray(spend * discounted[inverse.ravel()], dtype=np.float64)
