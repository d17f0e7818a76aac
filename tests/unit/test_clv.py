"""BG/NBD and Gamma-Gamma: gradients, bad input, the summary rules, CLV convention."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from funnelscope.errors import InvalidInputError, NotFittedError
from funnelscope.models.clv import (
    LIFETIMES_CLV_CONVENTION,
    BetaGeoModel,
    CLVConvention,
    GammaGammaModel,
    calibration_and_holdout,
    churn_risk_tier,
    summarise_transactions,
)

RNG = np.random.default_rng(7)
BG_DATA = (
    np.array([0, 1, 2, 5, 0, 3, 1.0]),
    np.array([0, 2.5, 10, 30, 0, 12, 0.5]),
    np.array([20, 30, 31, 32, 5, 40, 1.0]),
)
GG_DATA = (np.array([1, 2, 5, 3.0]), np.array([10.0, 22.5, 31.0, 7.5]))


@pytest.mark.parametrize(
    ("model", "data", "point"),
    [
        pytest.param(BetaGeoModel(), BG_DATA, [0.4, 3.0, 0.8, 2.5], id="bg_nbd"),
        pytest.param(BetaGeoModel(), BG_DATA, [1.7, 0.2, 2.5, 0.6], id="bg_nbd-other-point"),
        pytest.param(GammaGammaModel(), GG_DATA, [6.0, 3.5, 15.0], id="gamma_gamma"),
    ],
)
def test_analytic_gradient_matches_finite_differences(
    model: BetaGeoModel | GammaGammaModel, data: tuple[np.ndarray, ...], point: list[float]
) -> None:
    def total(p: np.ndarray) -> float:
        return float(model._log_likelihood(p, data)[0].sum())

    def grad(p: np.ndarray) -> np.ndarray:
        return model._log_likelihood(p, data)[1].sum(axis=0)

    numeric = optimize.approx_fprime(np.array(point), total, 1e-7)
    np.testing.assert_allclose(grad(np.array(point)), numeric, rtol=1e-4, atol=1e-5)


def test_predictions_before_fit_raise_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        BetaGeoModel().probability_alive(1, 1, 2)
    with pytest.raises(NotFittedError):
        GammaGammaModel().expected_spend(1, 10)
    assert repr(BetaGeoModel()) == "BetaGeoModel(not fitted)"


@pytest.mark.parametrize(
    ("data", "codes"),
    [
        pytest.param({"frequency": [1], "recency": [2]}, {"clv.missing_column"}, id="missing-T"),
        pytest.param(
            {"frequency": [-1], "recency": [0], "T": [1]}, {"clv.bad_value"}, id="negative"
        ),
        pytest.param(
            {"frequency": [1.5], "recency": [0.5], "T": [1]}, {"clv.bad_value"}, id="fractional"
        ),
        pytest.param(
            {"frequency": [1], "recency": [3], "T": [2]}, {"clv.recency_after_T"}, id="late"
        ),
        pytest.param(
            {"frequency": [0], "recency": [1], "T": [2]},
            {"clv.recency_without_repeat"},
            id="ghost-recency",
        ),
        pytest.param(
            {"frequency": [np.nan], "recency": [0], "T": [-1]},
            {"clv.bad_value"},
            id="nan-and-negative-both-reported",
        ),
        pytest.param(
            {"frequency": [1, 2], "recency": [0], "T": [1]}, {"clv.length_mismatch"}, id="lengths"
        ),
    ],
)
def test_bad_bg_nbd_data_is_rejected_with_every_problem(
    data: dict[str, list[float]], codes: set[str]
) -> None:
    with pytest.raises(InvalidInputError) as err:
        BetaGeoModel().fit(data)
    assert {p.code for p in err.value.problems} == codes
    if data.get("frequency") == [np.nan]:
        assert {p.location for p in err.value.problems} == {"frequency", "T"}


def test_gamma_gamma_needs_positive_spend_and_some_repeat_customers() -> None:
    with pytest.raises(InvalidInputError) as err:
        GammaGammaModel().fit({"frequency": [1, 2], "monetary_value": [0.0, 5.0]})
    assert err.value.code == "clv.bad_value"
    with pytest.raises(InvalidInputError) as err:
        GammaGammaModel().fit({"frequency": [0, 0], "monetary_value": [0.0, 0.0]})
    assert err.value.code == "clv.no_data"


def test_from_params_validates_names_and_values() -> None:
    with pytest.raises(InvalidInputError) as err:
        BetaGeoModel.from_params(r=1, alpha=-1, a=1, c=2)
    assert {(p.code, p.location) for p in err.value.problems} == {
        ("clv.missing_param", "b"),
        ("clv.unknown_param", "c"),
        ("clv.bad_param", "alpha"),
    }


def test_fit_recovers_simulated_parameters() -> None:
    # simulate BG/NBD customers observed for 52 weeks: the MLE lands near the truth
    r, alpha, a, b = 0.8, 6.0, 0.9, 3.0
    n = 4000
    lam = RNG.gamma(r, 1 / alpha, n)
    p = RNG.beta(a, b, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += RNG.exponential(1 / lam[i])
            if t > 52:
                break
            x[i] += 1
            t_x[i] = t
            if RNG.random() < p[i]:
                break
    model = BetaGeoModel().fit({"frequency": x, "recency": t_x, "T": np.full(n, 52.0)})
    assert model.params_ is not None
    got = np.array([model.params_[k] for k in ("r", "alpha", "a", "b")])
    np.testing.assert_allclose(got, [r, alpha, a, b], rtol=0.3)
    # the fitted model predicts the mean purchases it was fitted on
    assert model.expected_purchases_new_customer(52)[0] == pytest.approx(x.mean(), rel=0.05)


def test_p_alive_is_one_without_repeats_and_falls_with_silence() -> None:
    m = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
    assert m.probability_alive(0, 0, 50)[0] == 1.0
    quiet = m.probability_alive(3, np.array([40.0, 20.0, 5.0]), 50)
    assert quiet[0] > quiet[1] > quiet[2]
    assert list(churn_risk_tier([0.7, 0.69, 0.3, 0.29])) == ["low", "medium", "medium", "high"]


def test_clv_is_the_discounted_sum_over_periods() -> None:
    bg = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
    gg = GammaGammaModel.from_params(p=6.25, q=3.74, gamma=15.44)
    spend = gg.expected_spend(2, 20.0)[0]
    y1, y2 = bg.expected_purchases([4.0, 8.0], 2, 30, 39)
    hand = spend * y1 / 1.1 + spend * (y2 - y1) / 1.1**2
    got = gg.customer_lifetime_value(bg, 2, 30, 39, 20.0, CLVConvention(2, 4.0, 0.1))[0]
    assert got == pytest.approx(hand, rel=1e-12)
    undiscounted = gg.customer_lifetime_value(bg, 2, 30, 39, 20.0, CLVConvention(2, 4.0, 0.0))
    assert undiscounted[0] == pytest.approx(spend * y2, rel=1e-12)
    assert LIFETIMES_CLV_CONVENTION.to_dict() == {
        "periods": 12,
        "period_length": 4.345,
        "discount_rate": 0.01,
    }
    with pytest.raises(InvalidInputError):
        gg.customer_lifetime_value(bg, 2, 30, 39, 20.0, CLVConvention(0, -1.0, 0.1))


def test_summary_collapses_days_and_leaves_out_the_first_purchase_value() -> None:
    log = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b", "c"],
            "at": [
                datetime(2024, 1, 1, 9, tzinfo=UTC),
                datetime(2024, 1, 1, 23, tzinfo=UTC),  # same UTC day: one transaction
                datetime(2024, 1, 8, 10, tzinfo=UTC),
                datetime(2024, 1, 22, 10, tzinfo=UTC),
                datetime(2024, 1, 15, tzinfo=UTC),
                datetime(2024, 2, 20, tzinfo=UTC),  # after the observation end: ignored
            ],
            "amount": [10.0, 5.0, 20.0, 40.0, 7.0, 99.0],
        }
    )
    summary = summarise_transactions(log, observation_end=date(2024, 1, 29))
    assert summary.to_dict(orient="index") == {
        "a": {"frequency": 2.0, "recency": 3.0, "T": 4.0, "monetary_value": 30.0},
        "b": {"frequency": 0.0, "recency": 0.0, "T": 2.0, "monetary_value": 0.0},
    }
    split = calibration_and_holdout(
        log, calibration_end=date(2024, 1, 8), observation_end=date(2024, 2, 26)
    )
    assert split.loc["a", "frequency"] == 1.0
    assert split.loc["a", "holdout_frequency"] == 1.0  # Jan 22
    assert split.loc["a", "holdout_duration"] == 7.0
    assert "b" not in split.index  # first seen after calibration
    with pytest.raises(InvalidInputError):
        calibration_and_holdout(
            log, calibration_end=date(2024, 1, 8), observation_end=date(2024, 1, 8)
        )
