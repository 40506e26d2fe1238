"""The API's resources, written once for both clients.

Each method describes its call and hands it to the client's `send`, which
returns the parsed answer (sync) or a coroutine of it (async): `R` is
`dict[str, Any]` for `Billfold` and `Coroutine[..., dict[str, Any]]` for
`AsyncBillfold`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from billfold.sdk._call import Call, body, path, query, route

R = TypeVar("R")
Send = Callable[[Call], R]
Json = dict[str, Any]


class _Resource(Generic[R]):
    def __init__(self, send: Send[R]) -> None:
        self._send = send


class ApiKeys(_Resource[R]):
    @route("POST", "/v1/api-keys")
    def create(self, *, name: str | None = None, idempotency_key: str | None = None) -> R:
        """Issue a key; its secret `key` is in this answer only."""
        return self._send(Call("POST", "/v1/api-keys", body(name=name), None, idempotency_key))

    @route("GET", "/v1/api-keys")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call("GET", "/v1/api-keys", params=query(limit=limit, starting_after=starting_after))
        )

    @route("DELETE", "/v1/api-keys/{api_key_id}")
    def revoke(self, api_key_id: str) -> R:
        return self._send(Call("DELETE", path("/v1/api-keys/{api_key_id}", api_key_id)))


class WebhookEndpoints(_Resource[R]):
    @route("POST", "/v1/webhook-endpoints")
    def create(
        self,
        *,
        url: str,
        topics: Sequence[str] | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """The answer carries the signing `secret`, once."""
        data = body(url=url, topics=list(topics) if topics is not None else None)
        data |= body(description=description)
        return self._send(Call("POST", "/v1/webhook-endpoints", data, None, idempotency_key))

    @route("GET", "/v1/webhook-endpoints")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call(
                "GET",
                "/v1/webhook-endpoints",
                params=query(limit=limit, starting_after=starting_after),
            )
        )

    @route("GET", "/v1/webhook-endpoints/{endpoint_id}")
    def get(self, endpoint_id: str) -> R:
        return self._send(Call("GET", path("/v1/webhook-endpoints/{endpoint_id}", endpoint_id)))

    @route("PATCH", "/v1/webhook-endpoints/{endpoint_id}")
    def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        topics: Sequence[str] | None = None,
        description: str | None = None,
        status: str | None = None,
    ) -> R:
        data = body(url=url, topics=list(topics) if topics is not None else None)
        data |= body(description=description, status=status)
        return self._send(
            Call("PATCH", path("/v1/webhook-endpoints/{endpoint_id}", endpoint_id), data)
        )

    @route("DELETE", "/v1/webhook-endpoints/{endpoint_id}")
    def delete(self, endpoint_id: str) -> R:
        return self._send(Call("DELETE", path("/v1/webhook-endpoints/{endpoint_id}", endpoint_id)))

    @route("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret")
    def rotate_secret(self, endpoint_id: str, *, idempotency_key: str | None = None) -> R:
        template = "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"
        return self._send(Call("POST", path(template, endpoint_id), None, None, idempotency_key))

    @route("POST", "/v1/webhook-endpoints/{endpoint_id}/test")
    def test(self, endpoint_id: str, *, idempotency_key: str | None = None) -> R:
        template = "/v1/webhook-endpoints/{endpoint_id}/test"
        return self._send(Call("POST", path(template, endpoint_id), None, None, idempotency_key))

    @route("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries")
    def deliveries(
        self,
        endpoint_id: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
    ) -> R:
        return self._send(
            Call(
                "GET",
                path("/v1/webhook-endpoints/{endpoint_id}/deliveries", endpoint_id),
                params=query(status=status, limit=limit, starting_after=starting_after),
            )
        )

    @route("POST", "/v1/webhook-deliveries/{delivery_id}/retry")
    def retry_delivery(self, delivery_id: str, *, idempotency_key: str | None = None) -> R:
        template = "/v1/webhook-deliveries/{delivery_id}/retry"
        return self._send(Call("POST", path(template, delivery_id), None, None, idempotency_key))


class Assets(_Resource[R]):
    @route("POST", "/v1/assets")
    def create(
        self,
        *,
        code: str,
        name: str,
        scale: int,
        kind: str | None = None,
        symbol: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(code=code, name=name, scale=scale, kind=kind, symbol=symbol)
        return self._send(Call("POST", "/v1/assets", data, None, idempotency_key))

    @route("GET", "/v1/assets")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call("GET", "/v1/assets", params=query(limit=limit, starting_after=starting_after))
        )

    @route("GET", "/v1/assets/{code}")
    def get(self, code: str) -> R:
        return self._send(Call("GET", path("/v1/assets/{code}", code)))

    @route("POST", "/v1/assets/{code}/rates")
    def create_rate(
        self,
        code: str,
        *,
        base: str,
        rate: str,
        valid_from: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(base=base, rate=rate, valid_from=valid_from)
        return self._send(
            Call("POST", path("/v1/assets/{code}/rates", code), data, None, idempotency_key)
        )

    @route("GET", "/v1/assets/{code}/rates")
    def list_rates(
        self,
        code: str,
        *,
        base: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
    ) -> R:
        return self._send(
            Call(
                "GET",
                path("/v1/assets/{code}/rates", code),
                params=query(base=base, limit=limit, starting_after=starting_after),
            )
        )

    @route("GET", "/v1/assets/{code}/quote")
    def quote(self, code: str, *, base: str, amount: str, at: str | None = None) -> R:
        return self._send(
            Call(
                "GET",
                path("/v1/assets/{code}/quote", code),
                params=query(base=base, amount=amount, at=at),
            )
        )


class GatewayKeys(_Resource[R]):
    @route("POST", "/v1/customers/{customer_id}/gateway-keys")
    def create(
        self, customer_id: str, *, name: str | None = None, idempotency_key: str | None = None
    ) -> R:
        """A key the customer's own code sends to the gateway; `key` is in this answer only."""
        template = "/v1/customers/{customer_id}/gateway-keys"
        return self._send(
            Call("POST", path(template, customer_id), body(name=name), None, idempotency_key)
        )

    @route("GET", "/v1/customers/{customer_id}/gateway-keys")
    def list(
        self, customer_id: str, *, limit: int | None = None, starting_after: str | None = None
    ) -> R:
        return self._send(
            Call(
                "GET",
                path("/v1/customers/{customer_id}/gateway-keys", customer_id),
                params=query(limit=limit, starting_after=starting_after),
            )
        )

    @route("DELETE", "/v1/customers/{customer_id}/gateway-keys/{gateway_key_id}")
    def revoke(self, customer_id: str, gateway_key_id: str) -> R:
        template = "/v1/customers/{customer_id}/gateway-keys/{gateway_key_id}"
        return self._send(Call("DELETE", path(template, customer_id, gateway_key_id)))


class Customers(_Resource[R]):
    def __init__(self, send: Send[R]) -> None:
        super().__init__(send)
        self.gateway_keys = GatewayKeys(send)

    @route("POST", "/v1/customers")
    def create(
        self,
        *,
        external_id: str,
        name: str | None = None,
        email: str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Create, or return the existing customer with this `external_id`."""
        data = body(external_id=external_id, name=name, email=email)
        data |= body(metadata=dict(metadata) if metadata is not None else None)
        return self._send(Call("POST", "/v1/customers", data, None, idempotency_key))

    @route("GET", "/v1/customers")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call("GET", "/v1/customers", params=query(limit=limit, starting_after=starting_after))
        )

    @route("GET", "/v1/customers/{customer_id}")
    def get(self, customer_id: str) -> R:
        """`customer_id` is a `cus_…` id or `ext:<external_id>`."""
        return self._send(Call("GET", path("/v1/customers/{customer_id}", customer_id)))

    @route("GET", "/v1/customers/{customer_id}/wallet")
    def wallet(self, customer_id: str) -> R:
        return self._send(Call("GET", path("/v1/customers/{customer_id}/wallet", customer_id)))

    @route("PATCH", "/v1/customers/{customer_id}/wallet/balances/{asset}")
    def configure_balance(
        self,
        customer_id: str,
        asset: str,
        *,
        credit_limit: str | None = None,
        low_balance_threshold: str | None = None,
    ) -> R:
        template = "/v1/customers/{customer_id}/wallet/balances/{asset}"
        data = body(credit_limit=credit_limit, low_balance_threshold=low_balance_threshold)
        return self._send(Call("PATCH", path(template, customer_id, asset), data))

    @route("POST", "/v1/customers/{customer_id}/grants")
    def create_grant(
        self,
        customer_id: str,
        *,
        asset: str,
        purpose: str,
        amount: str | None = None,
        paid: Mapping[str, str] | None = None,
        priority: int | None = None,
        effective_at: str | None = None,
        expires_at: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(asset=asset, purpose=purpose, amount=amount, priority=priority)
        data |= body(paid=dict(paid) if paid is not None else None)
        data |= body(effective_at=effective_at, expires_at=expires_at)
        template = "/v1/customers/{customer_id}/grants"
        return self._send(Call("POST", path(template, customer_id), data, None, idempotency_key))

    @route("POST", "/v1/customers/{customer_id}/adjustments")
    def create_adjustment(
        self,
        customer_id: str,
        *,
        asset: str,
        amount: str,
        reason: str,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(asset=asset, amount=amount, reason=reason, description=description)
        template = "/v1/customers/{customer_id}/adjustments"
        return self._send(Call("POST", path(template, customer_id), data, None, idempotency_key))

    @route("GET", "/v1/customers/{customer_id}/entitlements/{feature_code}")
    def entitlement(self, customer_id: str, feature_code: str) -> R:
        template = "/v1/customers/{customer_id}/entitlements/{feature_code}"
        return self._send(Call("GET", path(template, customer_id, feature_code)))


class Authorizations(_Resource[R]):
    @route("POST", "/v1/authorizations")
    def create(
        self,
        *,
        customer_id: str,
        asset: str | None = None,
        amount: str | None = None,
        estimate: Mapping[str, Any] | None = None,
        ttl_s: int | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        """Hold `amount` of `asset`, or the rated price of an `estimate`
        (`{"event_type", "data"}`). A decline is an answer, not an error:
        `status: "declined"` with a `decline_code`."""
        data = body(customer_id=customer_id, asset=asset, amount=amount, ttl_s=ttl_s)
        data |= body(estimate=dict(estimate) if estimate is not None else None)
        data |= body(metadata=dict(metadata) if metadata is not None else None)
        return self._send(Call("POST", "/v1/authorizations", data, None, idempotency_key))

    @route("POST", "/v1/authorizations/{authorization_id}/capture")
    def capture(
        self,
        authorization_id: str,
        *,
        amount: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        template = "/v1/authorizations/{authorization_id}/capture"
        return self._send(
            Call(
                "POST",
                path(template, authorization_id),
                body(amount=amount),
                None,
                idempotency_key,
            )
        )

    @route("POST", "/v1/authorizations/{authorization_id}/release")
    def release(self, authorization_id: str, *, idempotency_key: str | None = None) -> R:
        template = "/v1/authorizations/{authorization_id}/release"
        return self._send(
            Call("POST", path(template, authorization_id), None, None, idempotency_key)
        )

    @route("GET", "/v1/authorizations/{authorization_id}")
    def get(self, authorization_id: str) -> R:
        return self._send(
            Call("GET", path("/v1/authorizations/{authorization_id}", authorization_id))
        )


class Events(_Resource[R]):
    @route("POST", "/v1/events")
    def ingest(
        self, events: Sequence[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> R:
        """Up to 1,000 events; one result per event (`accepted`, `duplicate`, `rejected`)."""
        data = {"events": [dict(event) for event in events]}
        return self._send(Call("POST", "/v1/events", data, None, idempotency_key))

    @route("GET", "/v1/events/{event_id}/costs")
    def costs(self, event_id: str) -> R:
        """The vendor costs recorded for an event."""
        return self._send(Call("GET", path("/v1/events/{event_id}/costs", event_id)))


class Meters(_Resource[R]):
    @route("POST", "/v1/meters")
    def create(
        self,
        *,
        code: str,
        event_type: str,
        aggregation: str,
        name: str | None = None,
        field: str | None = None,
        filters: Mapping[str, Sequence[str]] | None = None,
        group_by: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(code=code, event_type=event_type, aggregation=aggregation, name=name)
        data |= body(field=field, group_by=list(group_by) if group_by is not None else None)
        if filters is not None:
            data["filters"] = {key: list(values) for key, values in filters.items()}
        return self._send(Call("POST", "/v1/meters", data, None, idempotency_key))

    @route("GET", "/v1/meters")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call("GET", "/v1/meters", params=query(limit=limit, starting_after=starting_after))
        )

    @route("GET", "/v1/meters/{code}")
    def get(self, code: str) -> R:
        return self._send(Call("GET", path("/v1/meters/{code}", code)))

    @route("GET", "/v1/meters/{code}/usage")
    def usage(
        self,
        code: str,
        *,
        customer_id: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        granularity: str | None = None,
        group_by: str | None = None,
    ) -> R:
        params = query(customer_id=customer_id, to=to, granularity=granularity, group_by=group_by)
        if from_ is not None:
            params["from"] = from_
        return self._send(Call("GET", path("/v1/meters/{code}/usage", code), params=params))


class Products(_Resource[R]):
    @route("POST", "/v1/products")
    def create(
        self,
        *,
        code: str,
        name: str,
        prices: Sequence[Mapping[str, Any]],
        features: Sequence[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(code=code, name=name, prices=[dict(price) for price in prices])
        data |= body(features=[dict(f) for f in features] if features is not None else None)
        return self._send(Call("POST", "/v1/products", data, None, idempotency_key))

    @route("GET", "/v1/products")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call("GET", "/v1/products", params=query(limit=limit, starting_after=starting_after))
        )

    @route("GET", "/v1/products/{code}")
    def get(self, code: str) -> R:
        return self._send(Call("GET", path("/v1/products/{code}", code)))

    @route("POST", "/v1/products/{code}/versions")
    def create_version(
        self,
        code: str,
        *,
        prices: Sequence[Mapping[str, Any]],
        features: Sequence[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(prices=[dict(price) for price in prices])
        data |= body(features=[dict(f) for f in features] if features is not None else None)
        return self._send(
            Call("POST", path("/v1/products/{code}/versions", code), data, None, idempotency_key)
        )

    @route("GET", "/v1/products/{code}/versions/{number}")
    def get_version(self, code: str, number: int) -> R:
        return self._send(Call("GET", path("/v1/products/{code}/versions/{number}", code, number)))

    @route("POST", "/v1/products/{code}/versions/{number}/simulate")
    def simulate(
        self,
        code: str,
        number: int,
        *,
        events: Sequence[Mapping[str, Any]],
        idempotency_key: str | None = None,
    ) -> R:
        """The fees these events would cost under that version; changes nothing."""
        template = "/v1/products/{code}/versions/{number}/simulate"
        data = {"events": [dict(event) for event in events]}
        return self._send(Call("POST", path(template, code, number), data, None, idempotency_key))


class Subscriptions(_Resource[R]):
    @route("POST", "/v1/subscriptions")
    def create(
        self,
        *,
        customer_id: str,
        product: str,
        version: int | None = None,
        start_at: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(customer_id=customer_id, product=product, version=version, start_at=start_at)
        return self._send(Call("POST", "/v1/subscriptions", data, None, idempotency_key))

    @route("GET", "/v1/subscriptions")
    def list(
        self,
        *,
        customer_id: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
    ) -> R:
        params = query(customer_id=customer_id, limit=limit, starting_after=starting_after)
        return self._send(Call("GET", "/v1/subscriptions", params=params))

    @route("GET", "/v1/subscriptions/{subscription_id}")
    def get(self, subscription_id: str) -> R:
        return self._send(Call("GET", path("/v1/subscriptions/{subscription_id}", subscription_id)))

    @route("POST", "/v1/subscriptions/{subscription_id}/cancel")
    def cancel(self, subscription_id: str, *, idempotency_key: str | None = None) -> R:
        template = "/v1/subscriptions/{subscription_id}/cancel"
        return self._send(
            Call("POST", path(template, subscription_id), None, None, idempotency_key)
        )

    @route("POST", "/v1/subscriptions/{subscription_id}/change")
    def change(
        self,
        subscription_id: str,
        *,
        product: str,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        template = "/v1/subscriptions/{subscription_id}/change"
        data = body(product=product, version=version)
        return self._send(
            Call("POST", path(template, subscription_id), data, None, idempotency_key)
        )


class Invoices(_Resource[R]):
    @route("GET", "/v1/invoices")
    def list(
        self,
        *,
        customer_id: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
    ) -> R:
        params = query(customer_id=customer_id, limit=limit, starting_after=starting_after)
        return self._send(Call("GET", "/v1/invoices", params=params))

    @route("GET", "/v1/invoices/{invoice_id}")
    def get(self, invoice_id: str) -> R:
        return self._send(Call("GET", path("/v1/invoices/{invoice_id}", invoice_id)))

    @route("GET", "/v1/invoices/{invoice_id}/pdf")
    def pdf(self, invoice_id: str) -> R:
        """`{"content": <PDF bytes>, "content_type": …}`."""
        return self._send(Call("GET", path("/v1/invoices/{invoice_id}/pdf", invoice_id), raw=True))

    def _action(self, invoice_id: str, action: str, idempotency_key: str | None) -> R:
        return self._send(
            Call(
                "POST",
                path("/v1/invoices/{invoice_id}/", invoice_id) + action,
                None,
                None,
                idempotency_key,
            )
        )

    @route("POST", "/v1/invoices/{invoice_id}/finalize")
    def finalize(self, invoice_id: str, *, idempotency_key: str | None = None) -> R:
        return self._action(invoice_id, "finalize", idempotency_key)

    @route("POST", "/v1/invoices/{invoice_id}/void")
    def void(self, invoice_id: str, *, idempotency_key: str | None = None) -> R:
        return self._action(invoice_id, "void", idempotency_key)

    @route("POST", "/v1/invoices/{invoice_id}/mark-paid")
    def mark_paid(self, invoice_id: str, *, idempotency_key: str | None = None) -> R:
        return self._action(invoice_id, "mark-paid", idempotency_key)

    @route("POST", "/v1/invoices/{invoice_id}/mark-uncollectible")
    def mark_uncollectible(self, invoice_id: str, *, idempotency_key: str | None = None) -> R:
        return self._action(invoice_id, "mark-uncollectible", idempotency_key)


class InvoiceSettings(_Resource[R]):
    @route("GET", "/v1/invoice-settings")
    def get(self) -> R:
        return self._send(Call("GET", "/v1/invoice-settings"))

    @route("PATCH", "/v1/invoice-settings")
    def update(self, **fields: Any) -> R:
        """Any of `number_prefix`, `grace_period_s`, `net_terms_days`,
        `pay_from_wallet`, `legal_name`, `address`, `logo`."""
        return self._send(Call("PATCH", "/v1/invoice-settings", body(**fields)))


class CreditNotes(_Resource[R]):
    @route("POST", "/v1/credit-notes")
    def create(
        self,
        *,
        invoice_id: str,
        reason: str,
        description: str | None = None,
        refund: Any = None,
        lines: Sequence[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(invoice_id=invoice_id, reason=reason, description=description, refund=refund)
        data |= body(lines=[dict(line) for line in lines] if lines is not None else None)
        return self._send(Call("POST", "/v1/credit-notes", data, None, idempotency_key))

    @route("GET", "/v1/credit-notes/{credit_note_id}")
    def get(self, credit_note_id: str) -> R:
        return self._send(Call("GET", path("/v1/credit-notes/{credit_note_id}", credit_note_id)))

    @route("GET", "/v1/credit-notes/{credit_note_id}/pdf")
    def pdf(self, credit_note_id: str) -> R:
        template = "/v1/credit-notes/{credit_note_id}/pdf"
        return self._send(Call("GET", path(template, credit_note_id), raw=True))


class Coupons(_Resource[R]):
    @route("POST", "/v1/coupons")
    def create(
        self,
        *,
        code: str,
        name: str,
        percent_off: str | None = None,
        amount_off: str | None = None,
        asset: str | None = None,
        duration: str | None = None,
        duration_periods: int | None = None,
        products: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(code=code, name=name, percent_off=percent_off, amount_off=amount_off)
        data |= body(asset=asset, duration=duration, duration_periods=duration_periods)
        data |= body(products=list(products) if products is not None else None)
        return self._send(Call("POST", "/v1/coupons", data, None, idempotency_key))

    @route("POST", "/v1/customers/{customer_id}/coupons")
    def apply(self, customer_id: str, *, coupon: str, idempotency_key: str | None = None) -> R:
        template = "/v1/customers/{customer_id}/coupons"
        return self._send(
            Call("POST", path(template, customer_id), {"coupon": coupon}, None, idempotency_key)
        )


class TaxRates(_Resource[R]):
    @route("POST", "/v1/tax-rates")
    def create(
        self,
        *,
        code: str,
        name: str,
        rate_percent: str,
        inclusive: bool | None = None,
        customer_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(code=code, name=name, rate_percent=rate_percent, inclusive=inclusive)
        data |= body(customer_id=customer_id)
        return self._send(Call("POST", "/v1/tax-rates", data, None, idempotency_key))

    @route("GET", "/v1/tax-rates")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call("GET", "/v1/tax-rates", params=query(limit=limit, starting_after=starting_after))
        )


class Vendors(_Resource[R]):
    @route("POST", "/v1/vendors")
    def create(
        self, *, code: str, name: str | None = None, idempotency_key: str | None = None
    ) -> R:
        return self._send(
            Call("POST", "/v1/vendors", body(code=code, name=name), None, idempotency_key)
        )

    @route("GET", "/v1/vendors")
    def list(self, *, limit: int | None = None, starting_after: str | None = None) -> R:
        return self._send(
            Call("GET", "/v1/vendors", params=query(limit=limit, starting_after=starting_after))
        )

    @route("GET", "/v1/vendors/{vendor_id}")
    def get(self, vendor_id: str) -> R:
        return self._send(Call("GET", path("/v1/vendors/{vendor_id}", vendor_id)))


class Llm(_Resource[R]):
    @route("POST", "/v1/llm/cost")
    def cost(
        self,
        *,
        provider: str,
        model: str,
        usage: Mapping[str, Any],
        api: str | None = None,
        processing: str | None = None,
        service_tier: str | None = None,
    ) -> R:
        """What a model call's usage cost at the vendor's prices."""
        data = body(provider=provider, model=model, usage=dict(usage), api=api)
        data |= body(processing=processing, service_tier=service_tier)
        return self._send(Call("POST", "/v1/llm/cost", data))

    @route("POST", "/v1/llm/price-overrides")
    def create_price_override(
        self,
        *,
        provider: str,
        model: str | None = None,
        rates: Mapping[str, Any] | None = None,
        multiplier: str | None = None,
        effective_from: str | None = None,
        idempotency_key: str | None = None,
    ) -> R:
        data = body(provider=provider, model=model, multiplier=multiplier)
        data |= body(rates=dict(rates) if rates is not None else None)
        data |= body(effective_from=effective_from)
        return self._send(Call("POST", "/v1/llm/price-overrides", data, None, idempotency_key))

    @route("GET", "/v1/llm/price-overrides")
    def list_price_overrides(
        self, *, limit: int | None = None, starting_after: str | None = None
    ) -> R:
        params = query(limit=limit, starting_after=starting_after)
        return self._send(Call("GET", "/v1/llm/price-overrides", params=params))

    @route("GET", "/v1/llm/settings")
    def settings(self) -> R:
        return self._send(Call("GET", "/v1/llm/settings"))

    @route("POST", "/v1/llm/settings")
    def update_settings(self, *, idempotency_key: str | None = None, **fields: Any) -> R:
        """Any of `unknown_model_policy`, `markup_percent`, `reporting_asset`,
        `margin_low_percent`, `alert_window_days`."""
        return self._send(Call("POST", "/v1/llm/settings", body(**fields), None, idempotency_key))


class Analytics(_Resource[R]):
    @route("GET", "/v1/analytics/profitability")
    def profitability(
        self,
        *,
        from_: str | None = None,
        to: str | None = None,
        group_by: str | None = None,
        granularity: str | None = None,
    ) -> R:
        params = query(to=to, group_by=group_by, granularity=granularity)
        if from_ is not None:
            params["from"] = from_
        return self._send(Call("GET", "/v1/analytics/profitability", params=params))

    @route("GET", "/v1/customers/{customer_id}/profitability")
    def customer_profitability(
        self, customer_id: str, *, from_: str | None = None, to: str | None = None
    ) -> R:
        params = query(to=to)
        if from_ is not None:
            params["from"] = from_
        template = "/v1/customers/{customer_id}/profitability"
        return self._send(Call("GET", path(template, customer_id), params=params))


class Health(_Resource[R]):
    @route("GET", "/healthz")
    def live(self) -> R:
        return self._send(Call("GET", "/healthz"))

    @route("GET", "/readyz")
    def ready(self) -> R:
        return self._send(Call("GET", "/readyz"))


class Resources(Generic[R]):
    """Every resource, over one `send`."""

    def __init__(self, send: Send[R]) -> None:
        self.api_keys = ApiKeys(send)
        self.webhook_endpoints = WebhookEndpoints(send)
        self.assets = Assets(send)
        self.customers = Customers(send)
        self.authorizations = Authorizations(send)
        self.events = Events(send)
        self.meters = Meters(send)
        self.products = Products(send)
        self.subscriptions = Subscriptions(send)
        self.invoices = Invoices(send)
        self.invoice_settings = InvoiceSettings(send)
        self.credit_notes = CreditNotes(send)
        self.coupons = Coupons(send)
        self.tax_rates = TaxRates(send)
        self.vendors = Vendors(send)
        self.llm = Llm(send)
        self.analytics = Analytics(send)
        self.health = Health(send)
