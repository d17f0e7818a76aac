"""Customer lifetime value: BG/NBD (purchases, P(alive)) and Gamma-Gamma (spend, CLV).

Own maximum-likelihood code on scipy (docs/customers.md explains why not lifetimes or
pymc-marketing). Validated against the published CDNOW results in ``tests/peer/test_cdnow.py``.

>>> from funnelscope.models.clv import BetaGeoModel
>>> BetaGeoModel.from_params(r=0.243, alpha=4.414, a=0.793, b=2.426)
BetaGeoModel(r=0.243, alpha=4.414, a=0.793, b=2.426)
"""

from funnelscope.models.clv.backtest import BacktestResult, backtest
from funnelscope.models.clv.base import CLVModel
from funnelscope.models.clv.bg_nbd import BetaGeoModel, churn_risk_tier
from funnelscope.models.clv.data import (
    DEFAULT_TIME_UNIT,
    calibration_and_holdout,
    daily_transactions,
    summarise_transactions,
)
from funnelscope.models.clv.gamma_gamma import (
    DEFAULT_CLV_CONVENTION,
    LIFETIMES_CLV_CONVENTION,
    CLVConvention,
    GammaGammaModel,
)

__all__ = [
    "DEFAULT_CLV_CONVENTION",
    "DEFAULT_TIME_UNIT",
    "LIFETIMES_CLV_CONVENTION",
    "BacktestResult",
    "BetaGeoModel",
    "CLVConvention",
    "CLVModel",
    "GammaGammaModel",
    "backtest",
    "calibration_and_holdout",
    "churn_risk_tier",
    "daily_transactions",
    "summarise_transactions",
]
