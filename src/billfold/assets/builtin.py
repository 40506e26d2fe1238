"""ISO 4217 currencies every organization has without creating them.

They are code, not rows: the same for every tenant, never changed by one.
All are stored at `ISO_SCALE` decimals, well beyond their ISO exponent, so a
per-token price such as $0.00000015 is an exact integer of minor units. The
ISO exponent is kept as `display_exponent` for invoices, which round to it.
"""

from __future__ import annotations

from types import MappingProxyType

from billfold.assets.amounts import AssetInfo

ISO_SCALE = 9

# code: (name, ISO 4217 exponent, symbol)
_CURRENCIES: dict[str, tuple[str, int, str | None]] = {
    "AED": ("UAE Dirham", 2, None),
    "AUD": ("Australian Dollar", 2, "A$"),
    "BRL": ("Brazilian Real", 2, "R$"),
    "CAD": ("Canadian Dollar", 2, "CA$"),
    "CHF": ("Swiss Franc", 2, "CHF"),
    "CNY": ("Yuan Renminbi", 2, "CN¥"),
    "CZK": ("Czech Koruna", 2, "Kč"),
    "DKK": ("Danish Krone", 2, "kr"),
    "EUR": ("Euro", 2, "€"),
    "GBP": ("Pound Sterling", 2, "£"),
    "HKD": ("Hong Kong Dollar", 2, "HK$"),
    "IDR": ("Rupiah", 2, "Rp"),
    "ILS": ("New Israeli Sheqel", 2, "₪"),
    "INR": ("Indian Rupee", 2, "₹"),
    "JPY": ("Yen", 0, "¥"),
    "KRW": ("Won", 0, "₩"),
    "KWD": ("Kuwaiti Dinar", 3, None),
    "MXN": ("Mexican Peso", 2, "MX$"),
    "NOK": ("Norwegian Krone", 2, "kr"),
    "NZD": ("New Zealand Dollar", 2, "NZ$"),
    "PHP": ("Philippine Peso", 2, "₱"),
    "PLN": ("Zloty", 2, "zł"),
    "SAR": ("Saudi Riyal", 2, None),
    "SEK": ("Swedish Krona", 2, "kr"),
    "SGD": ("Singapore Dollar", 2, "S$"),
    "THB": ("Baht", 2, "฿"),
    "TRY": ("Turkish Lira", 2, "₺"),
    "USD": ("US Dollar", 2, "$"),
    "ZAR": ("Rand", 2, "R"),
}

BUILTIN_ASSETS: MappingProxyType[str, AssetInfo] = MappingProxyType(
    {
        code: AssetInfo(
            code=code,
            name=name,
            scale=ISO_SCALE,
            kind="fiat",
            symbol=symbol,
            display_exponent=exponent,
        )
        for code, (name, exponent, symbol) in sorted(_CURRENCIES.items())
    }
)

assert all(
    info.display_exponent is not None and info.display_exponent <= ISO_SCALE
    for info in BUILTIN_ASSETS.values()
)
