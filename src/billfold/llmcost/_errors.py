"""What the calculator refuses, each with a stable code."""

from __future__ import annotations


class LlmCostError(ValueError):
    code = "llm_cost_error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class UnknownModel(LlmCostError):
    """No price for this model: never treat it as free."""

    code = "unknown_model"


class UnknownProvider(LlmCostError):
    code = "unknown_provider"


class InvalidUsage(LlmCostError):
    """The usage object does not have the provider's shape, or its parts exceed its totals."""

    code = "invalid_usage"


class InvalidPriceTable(LlmCostError):
    code = "invalid_price_table"
