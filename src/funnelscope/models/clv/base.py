"""The base of every CLV model: data validation and maximum-likelihood ``fit``.

A model declares its parameter names, the data columns it needs and a vectorised per-customer
log-likelihood with its gradient. :meth:`CLVModel.fit` does the rest: it validates the data
(every problem reported at once), collapses identical customers into weighted rows, and maximises
the log-likelihood over the *logarithms* of the parameters (all are positive) with L-BFGS-B
using the analytic gradient, or with Nelder-Mead when asked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize

from funnelscope.errors import InvalidInputError, NotFittedError, Problem

__all__ = ["FIT_METHODS", "CLVModel", "FloatArray"]

FloatArray = npt.NDArray[np.float64]

#: Optimisers ``fit`` accepts; both work on log-parameters.
FIT_METHODS: Final = ("L-BFGS-B", "Nelder-Mead")


def as_float_array(values: npt.ArrayLike, name: str) -> FloatArray:
    """A 1-d float64 copy of ``values`` (a scalar becomes a length-1 array)."""
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1:
        raise InvalidInputError([Problem("clv.bad_shape", name, f"{name} must be one-dimensional")])
    return arr


class CLVModel(ABC):
    """A probability model of customer behaviour fitted by maximum likelihood.

    Subclasses set :attr:`param_names` and :attr:`data_columns` and implement
    :meth:`_log_likelihood`. Fitted attributes end in ``_``: ``params_`` (name -> value),
    ``log_likelihood_`` (the maximised total log-likelihood), ``n_customers_`` and
    ``converged_``. Predictions before :meth:`fit` (or :meth:`from_params`) raise
    :class:`~funnelscope.errors.NotFittedError`.
    """

    param_names: ClassVar[tuple[str, ...]]
    data_columns: ClassVar[tuple[str, ...]]

    def __init__(self) -> None:
        self.params_: dict[str, float] | None = None
        self.log_likelihood_: float | None = None
        self.n_customers_: int | None = None
        self.converged_: bool | None = None

    # -- to implement ----------------------------------------------------------------------
    @abstractmethod
    def _log_likelihood(
        self, params: FloatArray, data: tuple[FloatArray, ...]
    ) -> tuple[FloatArray, FloatArray]:
        """Per-row log-likelihood (n,) and its gradient w.r.t. the parameters (n, k)."""

    @abstractmethod
    def _validate(self, data: tuple[FloatArray, ...]) -> list[Problem]:
        """Every problem with the data (negative counts, recency after T...)."""

    def _fit_rows(self, data: tuple[FloatArray, ...]) -> tuple[FloatArray, ...]:
        """The rows that carry information (Gamma-Gamma keeps only repeat customers)."""
        return data

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        data: Mapping[str, Any] | pd.DataFrame,
        *,
        method: str = "L-BFGS-B",
        initial: Mapping[str, float] | None = None,
    ) -> Self:
        """Estimate the parameters by maximum likelihood.

        Parameters
        ----------
        data
            A DataFrame or a mapping with the columns named in :attr:`data_columns`.
        method
            ``"L-BFGS-B"`` (analytic gradient, default) or ``"Nelder-Mead"``.
        initial
            Starting values (default: 1 for every parameter).

        Returns
        -------
        The fitted model itself.
        """
        if method not in FIT_METHODS:
            raise InvalidInputError(
                [Problem("clv.bad_method", "method", f"method must be one of {FIT_METHODS}")]
            )
        columns = self._columns(data)
        problems = self._validate(columns)
        if problems:
            raise InvalidInputError(problems)
        rows = self._fit_rows(columns)
        if rows[0].size == 0:
            raise InvalidInputError(
                [Problem("clv.no_data", "data", "there are no customers to fit the model on")]
            )
        unique, weights = _collapse(rows)
        start = np.zeros(len(self.param_names))
        if initial is not None:
            start = np.log([float(initial[name]) for name in self.param_names])

        def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
            params = np.exp(log_params)
            ll, grad = self._log_likelihood(params, unique)
            # plain reductions, not BLAS: a matrix-vector product here pays thread start-up
            total = float(np.sum(weights * ll))
            # chain rule for log-parameters: d/d(log p) = p * d/dp
            g = np.sum(grad * weights[:, None], axis=0) * params
            if not np.isfinite(total):
                return 1e300, np.zeros_like(log_params)
            return -total, -g

        if method == "L-BFGS-B":
            result = optimize.minimize(
                objective,
                start,
                jac=True,
                method="L-BFGS-B",
                bounds=[(-20.0, 20.0)] * len(start),
                options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9},
            )
        else:
            result = optimize.minimize(
                lambda p: objective(p)[0],
                start,
                method="Nelder-Mead",
                options={"maxiter": 20000, "xatol": 1e-9, "fatol": 1e-10},
            )
        params = np.exp(result.x)
        self.params_ = dict(zip(self.param_names, (float(v) for v in params), strict=True))
        self.log_likelihood_ = -float(result.fun)
        self.n_customers_ = int(columns[0].size)
        self.converged_ = bool(result.success)
        return self

    @classmethod
    def from_params(cls, **params: float) -> Self:
        """A model with known parameters (published ones, or a saved fit); no data needed."""
        missing = [p for p in cls.param_names if p not in params]
        extra = [p for p in params if p not in cls.param_names]
        problems = (
            [Problem("clv.missing_param", p, f"parameter {p} is required") for p in missing]
            + [
                Problem("clv.unknown_param", p, f"unknown parameter; expected {cls.param_names}")
                for p in extra
            ]
            + [
                Problem("clv.bad_param", p, f"{p} must be a finite number > 0")
                for p, v in params.items()
                if p in cls.param_names and not (np.isfinite(v) and v > 0)
            ]
        )
        if problems:
            raise InvalidInputError(problems)
        model = cls()
        model.params_ = {p: float(params[p]) for p in cls.param_names}
        return model

    def log_likelihood(self, data: Mapping[str, Any] | pd.DataFrame) -> float:
        """The total log-likelihood of ``data`` at the fitted parameters."""
        columns = self._columns(data)
        problems = self._validate(columns)
        if problems:
            raise InvalidInputError(problems)
        ll, _ = self._log_likelihood(self._param_array(), self._fit_rows(columns))
        return float(ll.sum())

    # -- helpers ---------------------------------------------------------------------------
    def _param_array(self) -> FloatArray:
        if self.params_ is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(data) or from_params(...) first"
            )
        return np.array([self.params_[p] for p in self.param_names], dtype=np.float64)

    def _columns(self, data: Mapping[str, Any] | pd.DataFrame) -> tuple[FloatArray, ...]:
        missing = [c for c in self.data_columns if c not in data]
        if missing:
            raise InvalidInputError(
                [
                    Problem("clv.missing_column", c, f"data needs the columns {self.data_columns}")
                    for c in missing
                ]
            )
        arrays = tuple(as_float_array(data[c], c) for c in self.data_columns)
        sizes = {a.size for a in arrays}
        if len(sizes) > 1:
            raise InvalidInputError(
                [Problem("clv.length_mismatch", "data", "all columns must have the same length")]
            )
        return arrays

    def to_dict(self) -> dict[str, Any]:
        """Parameters and fit statistics as plain JSON."""
        return {
            "model": type(self).__name__,
            "params": dict(self.params_ or {}),
            "log_likelihood": self.log_likelihood_,
            "n_customers": self.n_customers_,
            "converged": self.converged_,
        }

    def __repr__(self) -> str:
        if self.params_ is None:
            return f"{type(self).__name__}(not fitted)"
        shown = ", ".join(f"{k}={v:.6g}" for k, v in self.params_.items())
        return f"{type(self).__name__}({shown})"


def _collapse(rows: tuple[FloatArray, ...]) -> tuple[tuple[FloatArray, ...], FloatArray]:
    """Identical customers as one weighted row: the likelihood is a sum over customers."""
    order = np.lexsort(rows[::-1])
    ordered = [r[order] for r in rows]
    change = np.ones(order.size, dtype=bool)
    if order.size > 1:
        change[1:] = np.any([np.diff(r) != 0 for r in ordered], axis=0)
    starts = np.flatnonzero(change)
    counts = np.diff(np.append(starts, order.size)).astype(np.float64)
    return tuple(np.ascontiguousarray(r[starts]) for r in ordered), counts


def nonnegative_problems(name: str, values: FloatArray) -> list[Problem]:
    """A problem when some values are negative or not finite."""
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        return [
            Problem(
                "clv.bad_value",
                name,
                f"{name} must be finite and >= 0; {int(bad.sum())} rows are not "
                f"(first at row {first})",
            )
        ]
    return []
