"""The demo shop simulator: a believable online shop's events and facts, fast and seeded.

>>> from funnelscope.simulate import simulate
>>> shop = simulate(customers=500, days=30, seed=7)
>>> sorted(shop.facts)
['ad_spend', 'currency_rates', 'email_campaigns', 'products', 'survey_responses']

The generative model (distributions, parameters and what each knob does) is described in
docs/simulator.md; the parameters live in :mod:`funnelscope.simulate.model`.
"""

from funnelscope.simulate.model import BEHAVIOUR, CHANNEL_PROFILES, Behaviour, ChannelProfile
from funnelscope.simulate.shop import DEFAULT_START, MAX_DAYS, SimulatedShop, simulate

__all__ = [
    "BEHAVIOUR",
    "CHANNEL_PROFILES",
    "DEFAULT_START",
    "MAX_DAYS",
    "Behaviour",
    "ChannelProfile",
    "SimulatedShop",
    "simulate",
]
