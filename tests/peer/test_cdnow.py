"""BG/NBD and Gamma-Gamma against the published CDNOW results.

Sources (../shared/reference/clv-references.md): Fader, Hardie & Lee (2005) for BG/NBD; Fader &
Hardie (2013) note 025 for Gamma-Gamma; the CLVTools test suite for the full-precision MLE;
Hardie's BG/NBD spreadsheet (note 004) and the BTYD docs for the other vectors; lifetimes 0.11.3
for the per-customer table. Data: the CDNOW 1/10 sample (tests/data/cdnow, MIT-licensed
redistribution from lifetimes).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelscope.models.clv import (
    LIFETIMES_CLV_CONVENTION,
    BetaGeoModel,
    GammaGammaModel,
    backtest,
    summarise_transactions,
)

DATA = Path(__file__).parents[1] / "data" / "cdnow"
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    raw = pd.read_csv(
        DATA / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "cds", "amount"],
    )
    raw["at"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    return raw


@pytest.fixture(scope="module")
def summary(log: pd.DataFrame) -> pd.DataFrame:
    return summarise_transactions(log, observation_end=CALIBRATION_END)


@pytest.fixture(scope="module")
def rounded_summary() -> pd.DataFrame:
    """lifetimes' summary CSV (2 decimals): the input of the published per-customer table."""
    csv = pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv", index_col="ID")
    return csv.rename(columns={"x": "frequency", "t_x": "recency", "zbar": "monetary_value"})


def test_summary_rebuilt_from_the_log_matches_the_published_one(
    summary: pd.DataFrame, rounded_summary: pd.DataFrame
) -> None:
    assert len(summary) == 2357
    assert (summary["frequency"] > 0).sum() == 946
    assert summary["frequency"].mean() == pytest.approx(1.0424, abs=1e-4)
    joined = summary.join(rounded_summary, suffixes=("", "_pub"))
    assert (joined["frequency"] == joined["frequency_pub"]).all()
    np.testing.assert_allclose(joined["recency"], joined["recency_pub"], atol=0.006)
    np.testing.assert_allclose(joined["T"], joined["T_pub"], atol=0.006)
    np.testing.assert_allclose(joined["monetary_value"], joined["monetary_value_pub"], atol=0.006)


def test_bg_nbd_fit_matches_fader_hardie_lee_2005(summary: pd.DataFrame) -> None:
    model = BetaGeoModel().fit(summary)
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert model.params_ is not None
        assert model.params_[name] == pytest.approx(value, rel=0.01), name
    assert model.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    # the full-precision MLE of CLVTools' test suite, from the same transaction log
    clvtools = {"r": 0.2425945, "alpha": 4.4136019, "a": 0.7929199, "b": 2.4258881}
    for name, value in clvtools.items():
        assert model.params_[name] == pytest.approx(value, rel=5e-5), name
    assert model.log_likelihood_ == pytest.approx(-9582.429, abs=1e-3)
    assert model.converged_


def test_nelder_mead_reaches_the_same_maximum(summary: pd.DataFrame) -> None:
    lbfgs = BetaGeoModel().fit(summary)
    nm = BetaGeoModel().fit(summary, method="Nelder-Mead")
    assert nm.log_likelihood_ == pytest.approx(lbfgs.log_likelihood_, abs=1e-5)


def test_gamma_gamma_fit_matches_fader_hardie_2013(summary: pd.DataFrame) -> None:
    model = GammaGammaModel().fit(summary)
    assert model.params_ is not None
    for name, value in {"p": 6.25, "q": 3.74, "gamma": 15.44}.items():
        assert model.params_[name] == pytest.approx(value, rel=0.01), name
    assert model.log_likelihood_ == pytest.approx(-4055.9177, abs=1e-3)  # CLVTools
    assert model.n_customers_ == 2357


def test_rounded_summary_reproduces_the_lifetimes_fit(rounded_summary: pd.DataFrame) -> None:
    bg = BetaGeoModel().fit(rounded_summary)
    gg = GammaGammaModel().fit(rounded_summary)
    assert bg.params_ is not None and gg.params_ is not None
    expected_bg = {"r": 0.242593, "alpha": 4.413532, "a": 0.792886, "b": 2.425754}
    expected_gg = {"p": 6.248802, "q": 3.744588, "gamma": 15.447748}
    for name, value in expected_bg.items():
        assert bg.params_[name] == pytest.approx(value, rel=2e-5), name
    for name, value in expected_gg.items():
        assert gg.params_[name] == pytest.approx(value, rel=2e-5), name
    assert bg.log_likelihood_ == pytest.approx(-9582.4256, abs=1e-3)
    assert gg.log_likelihood_ == pytest.approx(-4055.9232, abs=1e-3)


# ID, x, t_x, T, m̄, E[Y(39)], P(alive), GG E[M], CLV* (lifetimes, rounded summary)
PER_CUSTOMER = [
    (1, 2, 30.43, 38.86, 22.35, 1.225910, 0.726609, 24.6586, 36.278),
    (2, 1, 1.71, 38.86, 11.77, 0.203251, 0.212227, 18.9115, 4.637),
    (3, 0, 0.0, 38.86, 0.0, 0.194781, 1.000000, 35.1710, 8.344),
    (18, 1, 4.86, 38.86, 9.99, 0.297764, 0.310915, 17.6747, 6.350),
    (100, 1, 23.86, 38.29, 26.22, 0.626795, 0.646988, 28.9517, 21.886),
    (1000, 4, 24.43, 33.57, 16.26, 2.352955, 0.680351, 18.1311, 50.702),
    (1516, 26, 30.86, 31.00, 39.97, 20.750570, 0.968920, 39.8903, 972.126),
    (2000, 0, 0.0, 28.86, 0.0, 0.246208, 1.000000, 35.1710, 10.488),
]


@pytest.mark.parametrize("row", PER_CUSTOMER, ids=[f"customer-{r[0]}" for r in PER_CUSTOMER])
def test_per_customer_table(rounded_summary: pd.DataFrame, row: tuple[float, ...]) -> None:
    bg = BetaGeoModel().fit(rounded_summary)
    gg = GammaGammaModel().fit(rounded_summary)
    cid, x, t_x, big_t, m, e_y39, p_alive, e_m, clv = row
    stored = rounded_summary.loc[int(cid)]
    assert (stored["frequency"], stored["recency"], stored["T"]) == (x, t_x, big_t)
    # the reference's tolerance for lifetimes vs an independent fit: rtol about 1e-5
    assert bg.expected_purchases(39, x, t_x, big_t)[0] == pytest.approx(e_y39, rel=2e-5)
    assert bg.probability_alive(x, t_x, big_t)[0] == pytest.approx(p_alive, rel=2e-5)
    assert gg.expected_spend(x, m)[0] == pytest.approx(e_m, rel=2e-5)
    value = gg.customer_lifetime_value(bg, x, t_x, big_t, m, LIFETIMES_CLV_CONVENTION)[0]
    assert value == pytest.approx(clv, abs=1.5e-3)


def test_gamma_gamma_first_ten_customers_note_025(summary: pd.DataFrame) -> None:
    published = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    full = GammaGammaModel().fit(summary)
    first = summary.loc[1:10]
    got = full.expected_spend(first["frequency"], first["monetary_value"])
    np.testing.assert_allclose(got, published, atol=0.006)
    # at the rounded published parameters the population mean is 35.22, hence a 0.1 tolerance
    rounded = GammaGammaModel.from_params(p=6.25, q=3.74, gamma=15.44)
    got = rounded.expected_spend(first["frequency"], first["monetary_value"])
    np.testing.assert_allclose(got, published, atol=0.1)


def test_published_bg_nbd_vectors(summary: pd.DataFrame) -> None:
    published = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
    # BTYD docs
    assert published.probability_of_purchases(10, 2)[0] == pytest.approx(1.07869e-07, rel=1e-4)
    assert published.probability_of_purchases(0, 39)[0] == pytest.approx(0.5737864, rel=1e-6)
    # Hardie's spreadsheet (note 004), fitted parameters
    fitted = BetaGeoModel().fit(summary)
    ts = [0.1429, 1, 3, 31.8571, 32, 78]
    expected = [0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.858]
    got = fitted.expected_purchases_new_customer(ts)
    np.testing.assert_allclose(got, expected, atol=6e-5)
    assert fitted.expected_purchases(39, 2, 30.43, 38.86)[0] == pytest.approx(1.226, abs=5e-4)
    np.testing.assert_allclose(
        fitted.expected_purchases_new_customer([1, 39, 78]),
        [0.053185, 1.195016, 1.857972],
        rtol=1e-4,
    )


def test_probabilities_of_purchase_counts_sum_to_one() -> None:
    model = BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
    probs = model.probability_of_purchases(np.arange(0, 400), 39)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)
    mean = float((np.arange(0, 400) * probs).sum())
    assert mean == pytest.approx(model.expected_purchases_new_customer(39)[0], rel=1e-6)


def test_holdout_backtest_beats_the_naive_baseline(log: pd.DataFrame) -> None:
    result = backtest(log, calibration_end=CALIBRATION_END, observation_end=HOLDOUT_END)
    print("\nCDNOW 39/39-week backtest:", result.summary())
    assert result.customers == 2357
    assert len(result.periods) == 39
    assert result.actual_total == 1882  # the reference's count of holdout repeat purchase-days
    assert result.params["r"] == pytest.approx(0.2425945, rel=5e-5)
    assert result.model_mae < result.naive_mae / 2
    assert (
        abs(result.model_total - result.actual_total)
        < abs(result.naive_total - result.actual_total) / 3
    )
