"""Backtest of the goal forecast and status rule on simulated daily KPIs with known trends.

Each case is a shop's daily KPI (orders or revenue) over 181 days: a level, a linear trend of
-30% .. +50% over 180 days, a weekend lift of 0-30%, and Poisson (counts) or Gamma (amounts,
CV 10-40%) noise; seeds 0..119. The goal: +5%, +10%, +15% or +20% (by seed) over the 90-day
period that follows 91 days of history, against the 90 days before it. Each goal is evaluated
once, 0, 30 or 60 days into its period (by seed), and the status is compared with what the
simulation then realised.

The numbers are quoted in docs/goals.md ("Backtest"); keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from funnelscope.analysis.goals import status_for
from funnelscope.models.forecast import period_forecast

CASES = 120
HISTORY_DAYS, PERIOD_DAYS = 91, 90
FIRST = date(2024, 10, 2)
START = FIRST + timedelta(days=HISTORY_DAYS)
DEADLINE = START + timedelta(days=PERIOD_DAYS - 1)
#: Stated in docs/goals.md: decisive statuses (on/off track) agree with the outcome this often.
STATED_ACCURACY = 0.85
#: ... and at most this share of goals is left at risk.
STATED_MAX_AT_RISK = 0.25


def simulated_kpi(seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    days = HISTORY_DAYS + PERIOD_DAYS
    index = pd.date_range(FIRST, periods=days, freq="D")
    level, growth, lift = rng.uniform(20, 400), rng.uniform(-0.3, 0.5), rng.uniform(0, 0.3)
    weekend = index.day_of_week.to_numpy() >= 5
    mean = level * (1 + growth * np.arange(days) / 180) * (1 + lift * np.where(weekend, 1, -0.4))
    if seed % 2 == 0:  # a count: orders
        values = rng.poisson(np.maximum(mean, 0.1)).astype(float)
    else:  # an amount: revenue
        cv = rng.uniform(0.1, 0.4)
        values = mean * rng.gamma(1 / cv**2, cv**2, days)
    return pd.Series(values, index=index)


@dataclass(frozen=True)
class Outcome:
    status: str
    achieved: bool
    in80: bool
    in95: bool
    probability: float


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    out = []
    for seed in range(CASES):
        kpi = simulated_kpi(seed)
        baseline = float(kpi.iloc[HISTORY_DAYS - PERIOD_DAYS : HISTORY_DAYS].sum())
        target = baseline * (1 + (5, 10, 15, 20)[(seed // 3) % 4] / 100)
        realised = float(kpi.iloc[HISTORY_DAYS:].sum())
        elapsed = (0, 30, 60)[seed % 3]
        forecast = period_forecast(
            kpi.iloc[: HISTORY_DAYS + elapsed],
            period_start=START,
            period_end=DEADLINE,
            lower=0.0,
            repetitions=500,
            seed=seed,
        )
        p = forecast.probability(target)
        out.append(
            Outcome(
                status=status_for(p),
                achieved=realised >= target,
                probability=p,
                in80=forecast.interval80[0] <= realised <= forecast.interval80[1],
                in95=forecast.interval95[0] <= realised <= forecast.interval95[1],
            )
        )
    return out


def test_the_status_rule_classifies_known_outcomes(outcomes: list[Outcome]) -> None:
    decisive = [o for o in outcomes if o.status in ("on_track", "off_track")]
    right = [o for o in decisive if (o.status == "on_track") == o.achieved]
    accuracy = len(right) / len(decisive)
    at_risk = 1 - len(decisive) / len(outcomes)
    brier = float(np.mean([(o.probability - o.achieved) ** 2 for o in outcomes]))
    print(
        f"\ndecisive accuracy {accuracy:.3f} over {len(decisive)}; at risk {at_risk:.3f}; "
        f"achieved {sum(o.achieved for o in outcomes)}/{len(outcomes)}; Brier {brier:.3f}"
    )
    assert accuracy >= STATED_ACCURACY
    assert at_risk <= STATED_MAX_AT_RISK
    # Both outcomes occur, so the accuracy is not that of a constant answer.
    assert 0.2 < np.mean([o.achieved for o in outcomes]) < 0.8


def test_the_prediction_intervals_cover_the_realised_value(outcomes: list[Outcome]) -> None:
    cover80 = float(np.mean([o.in80 for o in outcomes]))
    cover95 = float(np.mean([o.in95 for o in outcomes]))
    print(
        f"\n80% interval coverage {cover80:.3f}, 95% interval coverage {cover95:.3f} "
        f"over {len(outcomes)} goals"
    )
    # Binomial tolerance: with 120 cases the standard error at 80% is 3.7 points.
    assert 0.70 <= cover80 <= 0.90
    assert 0.88 <= cover95 <= 0.99
