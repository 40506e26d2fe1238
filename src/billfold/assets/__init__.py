"""Assets (built-in ISO currencies and custom ones), exchange rates and quotes.

The public surface other domains use: look an asset up, turn decimal strings
into integer minor units and back, and convert at the rate in force.
"""

from billfold.assets.amounts import AssetInfo, convert_base_to_asset, format_amount, parse_amount
from billfold.assets.service import RateQuote, get_asset, rate_at

__all__ = [
    "AssetInfo",
    "RateQuote",
    "convert_base_to_asset",
    "format_amount",
    "get_asset",
    "parse_amount",
    "rate_at",
]
