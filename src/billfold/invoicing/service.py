"""Invoices: the billing run, totals, and the lifecycle.

Lifecycle: `draft` → `finalized` → `paid` | `void` | `uncollectible`.

- The billing run closes every subscription boundary due at or before its
  time (`bill_subscription`) and makes a draft per asset (lines.py), then
  finalizes the drafts whose grace period (invoice settings,
  `grace_period_s`, default 0: at once) has passed.
- A draft is recomputed when it is finalized, so events and edits that
  arrive during the grace period land on it. Finalizing gives it the next
  number of the organization's gap-free sequence (`ACME-2026-000042`), uses
  up its coupons, fixes its due date, and pays it from the prepaid wallet if
  the organization asked for that (`pay_from_wallet`); an invoice with
  nothing due is paid at once.
- Totals (money.py): charged lines − coupons (pre-tax) + exclusive taxes,
  exact at the asset's scale, then rounded half-up to the currency's ISO 4217
  exponent with the difference in `rounding_minor`. A negative total (more
  credited than charged) is credited to the customer's wallet when the
  invoice is finalized (a `refund` adjustment naming the invoice).

The run bills subscriptions in groups of one organization's, one transaction
per group under the group's row locks (taken in id order), and each
subscription's cursor (`billed_through`, `next_billing_at`) moves in that
same transaction, so a second run, even a concurrent one, finds nothing to
do; the unique key (subscription, kind, period_start, asset) is the last
guard. A group reads what its invoices need in one query per kind of data
(`_read_ahead`) and writes its invoices, numbers and webhooks at its end
(`_write_ahead`); a group that fails is rolled back and billed again one
subscription per transaction.

Progressive billing (a subscription's `usage_threshold`) and the minimum
commitment true-up are described in subscriptions/service.py and lines.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billfold import limits
from billfold.assets import AssetInfo, format_amount, get_asset, parse_amount
from billfold.clock import Clock
from billfold.customers import resolve_customer
from billfold.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from billfold.ids import new_id
from billfold.invoicing import money
from billfold.invoicing.lines import Ahead, Catalog, LineBuilder, LineDraft, usage_query
from billfold.invoicing.models import (
    Coupon,
    CouponRedemption,
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceSettings,
    TaxRate,
)
from billfold.invoicing.repository import (
    GroupUsageRepository,
    InvoicingRepository,
    due_subscriptions,
    load_subscriptions,
    lock_subscription,
    lock_subscriptions,
    threshold_subscriptions,
)
from billfold.organizations.models import Organization
from billfold.subscriptions.models import Subscription
from billfold.subscriptions.periods import subscription_period
from billfold.wallets.repository import WalletRepository
from billfold.wallets.service import adjust_customer, close_wallet, issue_grant, open_wallet
from billfold.webhooks import service as webhooks
from billfold.webhooks import topics

logger = logging.getLogger("billfold.invoicing")

ID_PREFIX = "inv_"
OPEN_STATUSES = ("finalized", "uncollectible")


# --- settings -------------------------------------------------------------------


def default_prefix(name: str) -> str:
    letters = re.sub(r"[^A-Za-z0-9]", "", name).upper()
    return (letters or "INV")[: limits.invoice_number_prefix_length_max]


async def settings_of(session: AsyncSession, organization_id: str) -> InvoiceSettings:
    """The organization's settings, defaults filled in (not stored until changed)."""
    found = await InvoicingRepository(session, organization_id).settings()
    if found is not None:
        return found
    organization = await session.get(Organization, organization_id)
    assert organization is not None
    return InvoiceSettings(
        organization_id=organization_id,
        number_prefix=default_prefix(organization.name),
        grace_period_s=0,
        net_terms_days=30,
        pay_from_wallet=False,
        legal_name=None,
        address=None,
        logo=None,
        updated_at=organization.created_at,
    )


async def organization_name(session: AsyncSession, organization_id: str) -> str:
    organization = await session.get(Organization, organization_id)
    assert organization is not None
    return organization.name


# --- totals ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Discount:
    redemption: CouponRedemption
    coupon: Coupon
    amount_minor: int


def discounts_for(
    redemptions: list[tuple[CouponRedemption, Coupon]],
    product_code: str,
    asset: AssetInfo,
    eligible_minor: int,
) -> list[Discount]:
    """Coupons in the order they were applied, each on what the earlier ones left."""
    out = []
    remaining = max(0, eligible_minor)
    for redemption, coupon in redemptions:
        if remaining == 0:
            break
        if coupon.product_codes is not None and product_code not in coupon.product_codes:
            continue
        if coupon.kind == "percentage":
            assert coupon.percent_off is not None
            amount = money.percent_of(eligible_minor, Decimal(coupon.percent_off))
        else:
            if coupon.asset_code != asset.code:
                continue
            if coupon.duration == "once":
                amount = redemption.remaining_minor or 0
            else:
                amount = coupon.amount_off_minor or 0
        amount = min(amount, remaining)
        if amount > 0:
            out.append(Discount(redemption, coupon, amount))
            remaining -= amount
    return out


async def _apply_totals(
    session: AsyncSession,
    invoice: Invoice,
    lines: list[InvoiceLine],
    product_code: str,
    asset: AssetInfo,
    *,
    lock: bool,
    ahead: Ahead | None = None,
) -> list[Discount]:
    repository = InvoicingRepository(session, invoice.organization_id)
    charged = [line.amount_minor for line in lines if line.charged]
    if ahead is not None and invoice.customer_id in ahead.redemptions:
        redemptions = [
            (redemption, coupon)
            for redemption, coupon in ahead.redemptions[invoice.customer_id]
            if redemption.status == "active"
        ]
    else:
        redemptions = await repository.active_redemptions(invoice.customer_id, lock=lock)
    discounts = discounts_for(redemptions, product_code, asset, sum(charged))
    if ahead is not None and invoice.customer_id in ahead.taxes:
        rates = ahead.taxes[invoice.customer_id]
    else:
        rates = await repository.tax_rates_for(invoice.customer_id)
    totals = money.totals(
        charged,
        sum(d.amount_minor for d in discounts),
        [
            money.TaxSpec(rate.code, rate.name, Decimal(rate.rate_percent), rate.inclusive)
            for rate in rates
        ],
        scale=asset.scale,
        exponent=asset.display_exponent,
    )
    invoice.subtotal_minor = totals.subtotal_minor
    invoice.discount_minor = totals.discount_minor
    invoice.tax_minor = totals.tax_minor
    invoice.total_minor = totals.total_minor
    invoice.rounding_minor = totals.rounding_minor
    invoice.total_rounded_minor = totals.total_rounded_minor
    invoice.taxes = [
        {
            "code": tax.code,
            "name": tax.name,
            "rate_percent": str(tax.rate_percent),
            "inclusive": tax.inclusive,
            "taxable_minor": tax.taxable_minor,
            "amount_minor": tax.amount_minor,
        }
        for tax in totals.taxes
    ]
    invoice.discounts = [
        {
            "coupon": d.coupon.code,
            "redemption_id": d.redemption.id,
            "amount_minor": d.amount_minor,
        }
        for d in discounts
    ]
    invoice.amount_due_minor = max(
        0, invoice.total_rounded_minor - invoice.paid_minor - invoice.credited_minor
    )
    return discounts


def _line_rows(invoice: Invoice, drafts: list[LineDraft]) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            id=new_id("il"),
            organization_id=invoice.organization_id,
            invoice_id=invoice.id,
            position=position,
            kind=draft.kind,
            price_code=draft.price_code,
            description=draft.description,
            quantity=draft.quantity,
            amount_minor=draft.amount_minor,
            charged=draft.charged,
            period_start=draft.period_start,
            period_end=draft.period_end,
            tiers=draft.tiers,
            credited_minor=0,
        )
        for position, draft in enumerate(drafts)
    ]


def invoice_payload(invoice: Invoice, asset: AssetInfo) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id,
        "status": invoice.status,
        "number": invoice.number,
        "asset": invoice.asset_code,
        "total": format_amount(asset, invoice.total_rounded_minor),
        "amount_due": format_amount(asset, invoice.amount_due_minor),
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
    }


# --- the billing run --------------------------------------------------------------


async def _make_invoices(
    session: AsyncSession,
    clock: Clock,
    catalog: Catalog,
    subscription: Subscription,
    kind: str,
    start: datetime,
    end: datetime,
    settings: InvoiceSettings,
    *,
    drafts: list[LineDraft] | None = None,
) -> list[tuple[Invoice, list[InvoiceLine]]]:
    now = clock.now()
    repository = InvoicingRepository(session, subscription.organization_id)
    ahead = catalog.ahead
    exists = None if ahead is None else ahead.invoice_exists(subscription.id, kind, start)
    if exists is None:
        exists = await repository.invoice_exists(subscription.id, kind, start)
    if exists:
        return []
    if drafts is None:
        drafts = await LineBuilder(session, catalog, subscription).compute(kind, start, end)
    by_asset: dict[str, list[LineDraft]] = {}
    for draft in drafts:
        by_asset.setdefault(draft.asset_code, []).append(draft)
    product_code = await catalog.product_code(subscription)
    invoices = []
    for asset_code, asset_lines in sorted(by_asset.items()):
        asset = await catalog.asset(asset_code)
        invoice = Invoice(
            id=new_id("inv"),
            organization_id=subscription.organization_id,
            customer_id=subscription.customer_id,
            subscription_id=subscription.id,
            kind=kind,
            period_start=start,
            period_end=end,
            asset_code=asset_code,
            status="draft",
            number=None,
            paid_minor=0,
            credited_minor=0,
            created_at=now,
            finalize_at=max(now, start if kind == "opening" else end)
            + timedelta(seconds=settings.grace_period_s),
            finalized_at=None,
            due_at=None,
            paid_at=None,
            voided_at=None,
            updated_at=now,
        )
        rows = _line_rows(invoice, asset_lines)
        await _apply_totals(session, invoice, rows, product_code, asset, lock=False, ahead=ahead)
        if ahead is not None:
            ahead.new_invoices.append(invoice)
            ahead.new_lines += rows
        else:
            await repository.add(invoice)
            # Lines go with the next flush, after their invoice's.
            session.add_all(rows)
        await _emit_invoice(session, clock, ahead, topics.INVOICE_CREATED, invoice, asset)
        invoices.append((invoice, rows))
    return invoices


async def _issue_credits(
    session: AsyncSession,
    clock: Clock,
    catalog: Catalog,
    subscription: Subscription,
    start: datetime,
    end: datetime,
) -> None:
    """The period's grants of `credits` prices, for periods not over yet.

    `expire_and_replace` grants lapse at the period's end. `rollover` grants
    do not expire; with a `rollover_cap`, what carries over into the new
    period is bounded by the cap: the new period's grant is reduced by the
    excess of the credits still unused, so after the refresh the customer
    holds min(unused, cap) + amount. (Should the excess ever exceed the
    amount, as after a change of amounts, the new grant is zero and the rest
    of the excess stays until the next refresh.)"""
    now = clock.now()
    if end <= now:
        return
    for stored in await catalog.version_prices(subscription):
        if stored["type"] != "credits":
            continue
        asset = await catalog.asset(stored["asset"])
        amount_minor = parse_amount(asset, stored["amount"], field="amount")
        capped_minor = 0
        if stored["refresh"] == "rollover" and stored.get("rollover_cap") is not None:
            cap_minor = parse_amount(asset, stored["rollover_cap"], allow_zero=True)
            unused = await _unused_rollover(session, clock, subscription, stored["code"], asset)
            capped_minor = min(amount_minor, max(0, unused - cap_minor))
            amount_minor -= capped_minor
        if amount_minor == 0:
            continue
        await issue_grant(
            session,
            clock,
            subscription.organization_id,
            subscription.customer_id,
            asset.code,
            amount_minor,
            purpose="bundled",
            # Bundled credits go first: they lapse with the period, paid money does not.
            priority=0,
            effective_at=max(start, subscription.start_at),
            expires_at=end if stored["refresh"] == "expire_and_replace" else None,
            details={
                "purpose": "bundled",
                "subscription_id": subscription.id,
                "price_code": stored["code"],
                "period_start": start.isoformat(),
                "rollover_capped_minor": capped_minor,
            },
        )


async def _unused_rollover(
    session: AsyncSession,
    clock: Clock,
    subscription: Subscription,
    price_code: str,
    asset: AssetInfo,
) -> int:
    """What the subscription's earlier `rollover` grants of this price still
    hold unused, read under the wallet's lock."""
    organization_id = subscription.organization_id
    opened = await open_wallet(
        session, clock.now(), organization_id, subscription.customer_id, asset.code, create=False
    )
    if opened is None:
        return 0
    grants = await WalletRepository(session, organization_id).live_grants(
        subscription.customer_id, asset.code
    )
    unused = 0
    for grant, _ in grants:
        state = opened.state.grants.get(grant.id)
        if (
            state is not None
            and state.status == "active"
            and grant.expires_at is None
            and grant.details.get("subscription_id") == subscription.id
            and grant.details.get("price_code") == price_code
        ):
            unused += state.account.available_minor
    await close_wallet(session, clock, opened)
    return unused


async def bill_subscription(
    session: AsyncSession,
    clock: Clock,
    catalog: Catalog,
    subscription: Subscription,
    until: datetime,
) -> list[Invoice]:
    """Close the subscription's boundaries due by `until`, moving its cursor.
    The caller holds the subscription's row lock."""
    ahead = catalog.ahead
    settings = (ahead.settings if ahead is not None else None) or await settings_of(
        session, subscription.organization_id
    )
    made: list[tuple[Invoice, list[InvoiceLine]]] = []
    for index in range(limits.billing_run_periods_per_subscription_max):
        boundary = subscription.next_billing_at
        if boundary is None or boundary > until:
            break
        if index >= 1 and ahead is not None:
            # A catch-up over several periods: what the read-ahead knew is stale.
            await _write_ahead(session, clock, ahead, subscription.organization_id)
            ahead.forget(subscription.id)
        if subscription.billed_through is None:
            start, end = subscription_period(subscription, subscription.start_at)
            made += await _make_invoices(
                session, clock, catalog, subscription, "opening", start, end, settings
            )
            await _issue_credits(session, clock, catalog, subscription, start, end)
            subscription.billed_through = subscription.start_at
            subscription.next_billing_at = end
            continue
        start = subscription.billed_through
        made += await _make_invoices(
            session, clock, catalog, subscription, "period", start, boundary, settings
        )
        subscription.billed_through = boundary
        if subscription.ends_at is not None and subscription.ends_at <= boundary:
            subscription.next_billing_at = None
            if subscription.status != "canceled":
                subscription.status = "canceled"
                subscription.canceled_at = subscription.canceled_at or boundary
                await emit_subscription(session, clock, subscription, topics.SUBSCRIPTION_CANCELED)
            break
        next_start, next_end = subscription_period(subscription, boundary)
        await _issue_credits(session, clock, catalog, subscription, next_start, next_end)
        subscription.next_billing_at = next_end
    if ahead is None:
        await session.flush()
    finalized = []
    for invoice, rows in made:
        if invoice.finalize_at <= clock.now():
            # Just computed in this transaction: finalized without recomputing.
            finalized.append(
                await finalize_invoice(
                    session, clock, invoice, catalog=catalog, subscription=subscription, rows=rows
                )
            )
        else:
            finalized.append(invoice)
    return finalized


async def bill_progressive(
    session: AsyncSession,
    clock: Clock,
    catalog: Catalog,
    subscription: Subscription,
    at: datetime,
) -> list[Invoice]:
    """Progressive billing: invoice the current period's in-arrears usage in
    the threshold's asset up to `at` when what is not invoiced yet reaches
    the subscription's threshold. The caller holds the subscription's row lock.

    Each progressive invoice covers `[end of the previous one, at)` and charges
    the period's usage to `at` less what earlier ones charged; the period's
    own invoice deducts them all. Run twice at the same `at`, the second
    finds nothing uninvoiced: nothing is made twice."""
    asset_code = subscription.usage_threshold_asset
    threshold_minor = subscription.usage_threshold_minor
    if (
        asset_code is None
        or threshold_minor is None
        or subscription.status != "active"
        or subscription.billed_through is None
        or subscription.next_billing_at is None
        or subscription.next_billing_at <= at
    ):
        return []
    period_start, _ = subscription_period(subscription, at)
    repository = InvoicingRepository(session, subscription.organization_id)
    cutoff = await repository.progressive_cutoff(subscription.id, period_start)
    if cutoff >= at:
        return []
    builder = LineBuilder(session, catalog, subscription)
    drafts = [
        line
        for line in await builder.compute("progressive", cutoff, at)
        if line.asset_code == asset_code
    ]
    if sum(line.amount_minor for line in drafts) < threshold_minor:
        return []
    settings = await settings_of(session, subscription.organization_id)
    made = await _make_invoices(
        session, clock, catalog, subscription, "progressive", cutoff, at, settings, drafts=drafts
    )
    await session.flush()
    return [
        await finalize_invoice(
            session, clock, invoice, catalog=catalog, subscription=subscription, rows=rows
        )
        if invoice.finalize_at <= clock.now()
        else invoice
        for invoice, rows in made
    ]


async def emit_subscription(
    session: AsyncSession, clock: Clock, subscription: Subscription, topic: str
) -> None:
    await webhooks.emit(
        session,
        clock,
        subscription.organization_id,
        topic,
        {
            "id": subscription.id,
            "customer_id": subscription.customer_id,
            "status": subscription.status,
            "version": subscription.version,
            "start_at": subscription.start_at.isoformat(),
            "ends_at": None if subscription.ends_at is None else subscription.ends_at.isoformat(),
        },
    )


async def finalize_invoice(
    session: AsyncSession,
    clock: Clock,
    invoice: Invoice,
    *,
    catalog: Catalog | None = None,
    subscription: Subscription | None = None,
    rows: list[InvoiceLine] | None = None,
) -> Invoice:
    """Recompute a draft, number it, and move it to `finalized` (or `paid`
    when nothing is due). The caller holds the invoice's row lock. A draft
    made in this same transaction comes with its `subscription` (locked) and
    its `rows`, and is not recomputed: nothing could have landed in between."""
    assert invoice.status == "draft", invoice.status
    organization_id = invoice.organization_id
    now = clock.now()
    catalog = catalog or Catalog(session, organization_id)
    repository = InvoicingRepository(session, organization_id)
    if subscription is None or rows is None:
        subscription = await lock_subscription(session, organization_id, invoice.subscription_id)
        assert subscription is not None
        # The old lines go first: late usage compares with what other invoices charged.
        await repository.delete_lines(invoice.id)
        drafts = [
            draft
            for draft in await LineBuilder(session, catalog, subscription).compute(
                invoice.kind, invoice.period_start, invoice.period_end
            )
            if draft.asset_code == invoice.asset_code
        ]
        rows = _line_rows(invoice, drafts)
        await repository.add(*rows)
    asset = await catalog.asset(invoice.asset_code)
    ahead = catalog.ahead
    discounts = await _apply_totals(
        session,
        invoice,
        rows,
        await catalog.product_code(subscription),
        asset,
        lock=True,
        ahead=ahead,
    )
    for discount in discounts:
        _use_coupon(discount)
    settings = (ahead.settings if ahead is not None else None) or await settings_of(
        session, organization_id
    )
    if ahead is not None:
        # Numbered with the rest of the group when it is written, in this order.
        ahead.to_number.append(invoice)
    else:
        number = await repository.next_number(now.year)
        invoice.number = f"{settings.number_prefix}-{now.year}-{number:06d}"
    invoice.status = "finalized"
    invoice.finalized_at = now
    invoice.due_at = now + timedelta(days=settings.net_terms_days)
    invoice.updated_at = now
    if ahead is None:
        await session.flush()
    await _emit_invoice(session, clock, ahead, topics.INVOICE_FINALIZED, invoice, asset)
    if invoice.total_rounded_minor < 0:
        # More credited than charged (an upgrade's or a cancel's unused fee):
        # the customer keeps the difference as wallet balance, not lost.
        await adjust_customer(
            session,
            clock,
            organization_id,
            invoice.customer_id,
            invoice.asset_code,
            -invoice.total_rounded_minor,
            reason="refund",
            description=f"credit balance of invoice {invoice.id}",
        )
    if settings.pay_from_wallet and invoice.amount_due_minor > 0:
        await _pay_from_wallet(session, clock, invoice)
    if invoice.amount_due_minor == 0:
        await _mark_paid(session, clock, invoice, asset, ahead=ahead)
    return invoice


async def _emit_invoice(
    session: AsyncSession,
    clock: Clock,
    ahead: Ahead | None,
    topic: str,
    invoice: Invoice,
    asset: AssetInfo,
) -> None:
    payload = invoice_payload(invoice, asset)
    if ahead is not None:
        ahead.events.append((topic, invoice, payload))
    else:
        await webhooks.emit(session, clock, invoice.organization_id, topic, payload)


async def _write_ahead(
    session: AsyncSession, clock: Clock, ahead: Ahead, organization_id: str, *, last: bool = False
) -> None:
    """Write what a group made: number its finalized invoices from one
    UPDATE of the sequence (in finalization order, gap-free as ever: the
    same transaction), insert invoices then lines, record the webhooks.

    At the group's `last` write nothing changes the new rows any more, so
    they go in as plain multi-row INSERTs; before that (a catch-up over
    several periods finalizes its invoices later) the session tracks them."""
    if ahead.to_number:
        assert ahead.settings is not None
        year = clock.now().year
        highest = await InvoicingRepository(session, organization_id).next_number(
            year, len(ahead.to_number)
        )
        first = highest - len(ahead.to_number) + 1
        for offset, invoice in enumerate(ahead.to_number):
            invoice.number = f"{ahead.settings.number_prefix}-{year}-{first + offset:06d}"
    if last:
        repository = InvoicingRepository(session, organization_id)
        await repository.insert_many(Invoice, ahead.new_invoices)
        await repository.insert_many(InvoiceLine, ahead.new_lines)
    elif ahead.new_invoices:
        session.add_all(ahead.new_invoices)
        await session.flush()
        session.add_all(ahead.new_lines)
    for topic, invoice, payload in ahead.events:
        payload["number"] = invoice.number if topic != topics.INVOICE_CREATED else None
    await webhooks.emit_many(
        session, clock, organization_id, [(topic, payload) for topic, _, payload in ahead.events]
    )
    await session.flush()
    ahead.new_invoices.clear()
    ahead.new_lines.clear()
    ahead.to_number.clear()
    ahead.events.clear()


def _use_coupon(discount: Discount) -> None:
    redemption, coupon = discount.redemption, discount.coupon
    redemption.periods_used += 1
    if coupon.kind == "fixed" and coupon.duration == "once":
        redemption.remaining_minor = (redemption.remaining_minor or 0) - discount.amount_minor
        if redemption.remaining_minor <= 0:
            redemption.status = "exhausted"
    elif coupon.duration == "once" or (
        coupon.duration == "repeating" and redemption.periods_used >= (coupon.duration_periods or 0)
    ):
        redemption.status = "exhausted"


async def _pay_from_wallet(session: AsyncSession, clock: Clock, invoice: Invoice) -> None:
    """Pay what the wallet's own funds cover (grants first, then the main
    balance; never the credit limit, never into debt); the rest stays due and
    the invoice stays `finalized`."""
    now = clock.now()
    opened = await open_wallet(
        session, now, invoice.organization_id, invoice.customer_id, invoice.asset_code, create=False
    )
    if opened is None:
        return
    state = opened.state
    # available_minor counts the credit limit (a negative floor on the main
    # account); an invoice is paid from money that is there.
    funds = state.available_minor(now) + min(0, state.main.floor_minor)
    amount = min(funds, invoice.amount_due_minor)
    if amount > 0:
        opened.state.charge(invoice.id, amount, now, "invoice_payment", invoice=invoice.id)
        invoice.paid_minor += amount
        invoice.amount_due_minor -= amount
    await close_wallet(session, clock, opened)


async def _mark_paid(
    session: AsyncSession,
    clock: Clock,
    invoice: Invoice,
    asset: AssetInfo,
    *,
    ahead: Ahead | None = None,
) -> None:
    now = clock.now()
    invoice.status = "paid"
    invoice.paid_at = now
    invoice.updated_at = now
    if ahead is None:
        await session.flush()
    await _emit_invoice(session, clock, ahead, topics.INVOICE_PAID, invoice, asset)


@dataclass(frozen=True, slots=True)
class RunReport:
    subscriptions: int
    invoices: int
    finalized: int
    failed: int


async def run_billing(
    sessions: async_sessionmaker[AsyncSession], clock: Clock, at: datetime | None = None
) -> RunReport:
    """Close every boundary due at or before `at` (default now), across
    organizations; then invoice usage past progressive thresholds, then
    finalize the drafts whose grace period has passed.

    Subscriptions are billed in groups of `billing_run_group_size` of one
    organization, one transaction per group: the group is locked, what its
    invoices need is read in a few queries for all of it (`_read_ahead`), and
    each subscription's cursor moves in that transaction. If anything in a
    group fails, the group is rolled back and its subscriptions are billed
    one per transaction, so one bad subscription delays only itself."""
    until = at or clock.now()
    tally = _Tally()
    catalogs: dict[str, Catalog] = {}
    skip: set[str] = set()
    while True:
        async with sessions() as session:
            due = [
                item
                for item in await due_subscriptions(
                    session, until, limits.billing_run_batch_size + len(skip)
                )
                if item[1] not in skip
            ]
        if not due:
            break
        by_organization: dict[str, list[str]] = {}
        for organization_id, subscription_id in due:
            by_organization.setdefault(organization_id, []).append(subscription_id)
        for organization_id, ids in by_organization.items():
            size = limits.billing_run_group_size
            for group in (ids[i : i + size] for i in range(0, len(ids), size)):
                if len(group) > 1:
                    try:
                        await _bill_group(
                            sessions, clock, catalogs, organization_id, group, until, tally, skip
                        )
                        continue
                    except Exception:
                        logger.exception(
                            "billing a group failed; billing its subscriptions one by one",
                            extra={"organization_id": organization_id},
                        )
                for subscription_id in group:
                    try:
                        await _bill_group(
                            sessions,
                            clock,
                            catalogs,
                            organization_id,
                            [subscription_id],
                            until,
                            tally,
                            skip,
                        )
                    except Exception:
                        logger.exception(
                            "billing a subscription failed",
                            extra={"subscription_id": subscription_id},
                        )
                        skip.add(subscription_id)
                        tally.failed += 1
    progressive = await _run_progressive(sessions, clock, until, catalogs)
    tally.invoices += len(progressive)
    tally.finalized += sum(1 for invoice in progressive if invoice.status != "draft")
    tally.finalized += await finalize_due_drafts(sessions, clock, until)
    return RunReport(tally.subscriptions, tally.invoices, tally.finalized, tally.failed)


@dataclass(slots=True)
class _Tally:
    subscriptions: int = 0
    invoices: int = 0
    finalized: int = 0
    failed: int = 0


async def _bill_group(
    sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    catalogs: dict[str, Catalog],
    organization_id: str,
    subscription_ids: list[str],
    until: datetime,
    tally: _Tally,
    skip: set[str],
) -> None:
    """Bill a group of one organization's subscriptions in one transaction;
    the tally and skips count only once it committed."""
    made: list[tuple[Subscription, list[Invoice]]] = []
    async with sessions() as session:
        catalog = _catalog_for(session, organization_id, catalogs)
        subscriptions = await lock_subscriptions(session, organization_id, subscription_ids)
        ahead = catalog.ahead = await _read_ahead(session, catalog, subscriptions, until)
        try:
            for subscription in subscriptions:
                made.append(
                    (
                        subscription,
                        await bill_subscription(session, clock, catalog, subscription, until),
                    )
                )
            await _write_ahead(session, clock, ahead, organization_id, last=True)
        finally:
            catalog.ahead = None
        await session.commit()
    for subscription, invoices in made:
        if subscription.next_billing_at is not None and subscription.next_billing_at <= until:
            # Caught up only partly this run (a very old start).
            skip.add(subscription.id)
        tally.subscriptions += 1
        tally.invoices += len(invoices)
        tally.finalized += sum(1 for invoice in invoices if invoice.status != "draft")


async def _read_ahead(
    session: AsyncSession, catalog: Catalog, subscriptions: list[Subscription], until: datetime
) -> Ahead:
    """Read, for a locked group, what each subscription's next boundary needs:
    its invoices, the usage of the period it closes (and of the period before,
    for late usage, when that one is finalized), its real-time totals, the
    customers' taxes and coupons, the settings. One query per kind of data
    and per distinct period, not per subscription."""
    organization_id = catalog.organization_id
    repository = InvoicingRepository(session, organization_id)
    ahead = Ahead(settings=await settings_of(session, organization_id))
    if not subscriptions:
        return ahead
    closing: dict[str, tuple[datetime, datetime]] = {}
    previous: dict[str, tuple[datetime, datetime]] = {}
    since = min(s.start_at for s in subscriptions)
    for sub in subscriptions:
        boundary = sub.next_billing_at
        if boundary is None or boundary > until or sub.billed_through is None:
            continue
        start = sub.billed_through
        closing[sub.id] = (start, boundary)
        if start > sub.start_at:
            before = subscription_period(sub, start - timedelta(microseconds=1))
            if before[1] == start:
                previous[sub.id] = before
                since = min(since, before[0])
    ids = [sub.id for sub in subscriptions]
    ahead.invoices = await repository.invoice_keys(ids, since)
    late = {sid: span for sid, span in previous.items() if ahead.period_finalized(sid, span[0])}
    if late:
        ahead.billed_usage = await repository.billed_usage_many(
            list(late), min(span[0] for span in late.values())
        )
        ahead.billed_for = set(late)
    windows: dict[str, list[tuple[datetime, datetime]]] = {
        sub.id: [w for w in (closing.get(sub.id), late.get(sub.id)) if w is not None]
        for sub in subscriptions
    }
    await _read_usage(session, catalog, ahead, subscriptions, windows)
    by_period: dict[tuple[datetime, datetime], list[str]] = {}
    for sid, span in closing.items():
        by_period.setdefault(span, []).append(sid)
    for (start, end), sids in by_period.items():
        for sid, totals in (await repository.realtime_totals_many(sids, start, end)).items():
            ahead.realtime[(sid, start, end)] = totals
    customers = list(dict.fromkeys(sub.customer_id for sub in subscriptions))
    ahead.taxes = await repository.tax_rates_many(customers)
    ahead.redemptions = await repository.active_redemptions_many(customers)
    return ahead


async def _run_progressive(
    sessions: async_sessionmaker[AsyncSession],
    clock: Clock,
    until: datetime,
    catalogs: dict[str, Catalog],
) -> list[Invoice]:
    """Check every active subscription with a usage threshold, in id order
    across organizations: a group's usage is read in one query per price
    (without locks), and only the subscriptions past their threshold are
    then billed, one locked transaction each, where `bill_progressive`
    checks again."""
    made: list[Invoice] = []
    after = ""
    while True:
        async with sessions() as session:
            batch = await threshold_subscriptions(
                session, until, after, limits.billing_run_batch_size
            )
        if not batch:
            return made
        after = batch[-1][1]
        by_organization: dict[str, list[str]] = {}
        for organization_id, subscription_id in batch:
            by_organization.setdefault(organization_id, []).append(subscription_id)
        for organization_id, ids in by_organization.items():
            size = limits.billing_run_group_size
            for group in (ids[i : i + size] for i in range(0, len(ids), size)):
                try:
                    due = await _past_threshold(sessions, catalogs, organization_id, group, until)
                except Exception:
                    logger.exception(
                        "checking usage thresholds failed",
                        extra={"organization_id": organization_id},
                    )
                    due = group
                for subscription_id in due:
                    try:
                        async with sessions() as session:
                            subscription = await lock_subscription(
                                session, organization_id, subscription_id
                            )
                            if subscription is None:
                                continue
                            catalog = _catalog_for(session, organization_id, catalogs)
                            made += await bill_progressive(
                                session, clock, catalog, subscription, until
                            )
                            await session.commit()
                    except Exception:
                        logger.exception(
                            "progressive billing failed", extra={"subscription_id": subscription_id}
                        )


async def _past_threshold(
    sessions: async_sessionmaker[AsyncSession],
    catalogs: dict[str, Catalog],
    organization_id: str,
    subscription_ids: list[str],
    until: datetime,
) -> list[str]:
    """The subscriptions of the group whose period's usage not yet invoiced
    has reached their threshold (as `bill_progressive` would find it)."""
    async with sessions() as session:
        catalog = _catalog_for(session, organization_id, catalogs)
        subscriptions = [
            sub
            for sub in await load_subscriptions(session, organization_id, subscription_ids)
            if sub.usage_threshold_asset is not None and sub.usage_threshold_minor is not None
        ]
        periods = {sub.id: subscription_period(sub, until)[0] for sub in subscriptions}
        ahead = catalog.ahead = Ahead()
        try:
            await _read_usage(
                session,
                catalog,
                ahead,
                subscriptions,
                {sub.id: [(periods[sub.id], until)] for sub in subscriptions},
            )
            billed = await InvoicingRepository(session, organization_id).progressive_billed_many(
                [sub.id for sub in subscriptions], min(periods.values(), default=until), until
            )
            due = []
            for sub in subscriptions:
                asset_code = sub.usage_threshold_asset
                lines = await LineBuilder(session, catalog, sub).usage(periods[sub.id], until)
                rated = sum(line.amount_minor for line in lines if line.asset_code == asset_code)
                already = sum(
                    amount
                    for (sid, asset, period_start), amount in billed.items()
                    if sid == sub.id and asset == asset_code and period_start >= periods[sub.id]
                )
                if rated - already >= (sub.usage_threshold_minor or 0):
                    due.append(sub.id)
            return due
        finally:
            catalog.ahead = None


async def _read_usage(
    session: AsyncSession,
    catalog: Catalog,
    ahead: Ahead,
    subscriptions: list[Subscription],
    windows: dict[str, list[tuple[datetime, datetime]]],
) -> None:
    """The in-arrears usage of each subscription over its `windows`: one
    aggregate per (price, window) for all the group's customers."""
    spans: dict[tuple[str, int, str, datetime, datetime], tuple[Subscription, list[str]]] = {}
    for sub in subscriptions:
        if not windows.get(sub.id):
            continue
        for stored in await catalog.version_prices(sub):
            if stored["type"] != "usage" or stored["billing"] != "in_arrears":
                continue
            for start, end in windows[sub.id]:
                key = (sub.product_id, sub.version, stored["code"], start, end)
                spans.setdefault(key, (sub, []))[1].append(sub.customer_id)
    usage = GroupUsageRepository(session, catalog.organization_id)
    for (product_id, version, code, start, end), (sub, customers) in spans.items():
        [stored] = [p for p in await catalog.version_prices(sub) if p["code"] == code]
        meter = await catalog.meter(stored["meter"])
        price = await catalog.usage_price(sub, stored)
        query, _ = usage_query(meter, price, None, start, end)
        for customer_id, cells in (await usage.aggregate_customers(query, customers)).items():
            ahead.usage[(customer_id, product_id, version, code, start, end)] = cells


def _catalog_for(
    session: AsyncSession, organization_id: str, catalogs: dict[str, Catalog]
) -> Catalog:
    """A catalog on this session that shares the run's cache for the organization."""
    catalog = Catalog(session, organization_id)
    cached = catalogs.get(organization_id)
    if cached is not None:
        catalog.versions = cached.versions
        catalog.product_codes = cached.product_codes
        catalog.meters = cached.meters
        catalog.assets = cached.assets
        catalog.prices = cached.prices
    catalogs[organization_id] = catalog
    return catalog


async def finalize_due_drafts(
    sessions: async_sessionmaker[AsyncSession], clock: Clock, until: datetime
) -> int:
    count = 0
    skip: set[str] = set()
    while True:
        async with sessions() as session:
            due = [
                item
                for item in await InvoicingRepository.due_drafts(
                    session, min(until, clock.now()), limits.billing_run_batch_size + len(skip)
                )
                if item[1] not in skip
            ]
        if not due:
            return count
        for organization_id, invoice_id in due:
            try:
                async with sessions() as session:
                    invoice = await InvoicingRepository(session, organization_id).get(
                        invoice_id, lock=True
                    )
                    if invoice is not None and invoice.status == "draft":
                        await finalize_invoice(session, clock, invoice)
                        count += 1
                    await session.commit()
            except Exception:
                logger.exception("finalizing an invoice failed", extra={"invoice_id": invoice_id})
                skip.add(invoice_id)


# --- lifecycle by hand ------------------------------------------------------------


async def get_invoice(
    session: AsyncSession, organization_id: str, invoice_id: str, *, lock: bool = False
) -> Invoice:
    """Another organization's invoice is not found, exactly like a missing one."""
    invoice = None
    if invoice_id.startswith(ID_PREFIX) and len(invoice_id) <= 40:
        invoice = await InvoicingRepository(session, organization_id).get(invoice_id, lock=lock)
    if invoice is None:
        raise NotFound.of("invoice", field="id")
    return invoice


def _wrong_status(invoice: Invoice, allowed: str) -> Conflict:
    return Conflict(
        f"This invoice is {invoice.status}; only {allowed} invoices can do that.",
        code="invoice_status_invalid",
        field="id",
    )


async def finalize(
    session: AsyncSession, clock: Clock, organization_id: str, invoice_id: str
) -> Invoice:
    invoice = await get_invoice(session, organization_id, invoice_id, lock=True)
    if invoice.status != "draft":
        raise _wrong_status(invoice, "draft")
    return await finalize_invoice(session, clock, invoice)


async def void(
    session: AsyncSession, clock: Clock, organization_id: str, invoice_id: str
) -> Invoice:
    """Void a finalized or uncollectible invoice nothing was paid on (a paid
    one is refunded with a credit note instead)."""
    invoice = await get_invoice(session, organization_id, invoice_id, lock=True)
    if invoice.status not in OPEN_STATUSES or invoice.paid_minor > 0:
        raise _wrong_status(invoice, "unpaid finalized or uncollectible")
    now = clock.now()
    invoice.status = "void"
    invoice.voided_at = now
    invoice.amount_due_minor = 0
    invoice.updated_at = now
    await session.flush()
    asset = await Catalog(session, organization_id).asset(invoice.asset_code)
    await webhooks.emit(
        session, clock, organization_id, topics.INVOICE_VOIDED, invoice_payload(invoice, asset)
    )
    return invoice


async def mark_paid(
    session: AsyncSession, clock: Clock, organization_id: str, invoice_id: str
) -> Invoice:
    """Record that the balance due was paid outside Billfold."""
    invoice = await get_invoice(session, organization_id, invoice_id, lock=True)
    if invoice.status not in OPEN_STATUSES:
        raise _wrong_status(invoice, "finalized or uncollectible")
    invoice.paid_minor += invoice.amount_due_minor
    invoice.amount_due_minor = 0
    asset = await Catalog(session, organization_id).asset(invoice.asset_code)
    await _mark_paid(session, clock, invoice, asset)
    return invoice


async def mark_uncollectible(
    session: AsyncSession, clock: Clock, organization_id: str, invoice_id: str
) -> Invoice:
    invoice = await get_invoice(session, organization_id, invoice_id, lock=True)
    if invoice.status != "finalized":
        raise _wrong_status(invoice, "finalized")
    invoice.status = "uncollectible"
    invoice.updated_at = clock.now()
    await session.flush()
    return invoice


# --- taxes, coupons, settings -------------------------------------------------------


async def create_tax_rate(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    *,
    code: str,
    name: str,
    rate_percent: str,
    inclusive: bool,
    customer_ref: str | None,
) -> TaxRate:
    repository = InvoicingRepository(session, organization_id)
    rate = _percent(rate_percent, "rate_percent")
    customer_id = None
    if customer_ref is not None:
        customer_id = (
            await resolve_customer(session, organization_id, customer_ref, field="customer_id")
        ).id
    if await repository.count(TaxRate) >= limits.tax_rates_per_organization_max:
        raise LimitExceeded("Too many tax rates.", code="tax_rate_limit_reached")
    if await repository.tax_rate_by_code(code) is not None:
        raise Conflict("A tax rate has this code.", code="tax_rate_exists", field="code")
    row = TaxRate(
        id=new_id("txr"),
        organization_id=organization_id,
        code=code,
        name=name,
        rate_percent=str(rate),
        inclusive=inclusive,
        customer_id=customer_id,
        created_at=clock.now(),
    )
    await repository.add(row)
    return row


def _percent(value: str, field: str) -> Decimal:
    try:
        rate = Decimal(value)
    except ArithmeticError:
        rate = Decimal(-1)
    exponent = rate.as_tuple().exponent
    if not isinstance(exponent, int) or rate < 0 or rate > 100 or exponent < -6:
        raise InvalidRequest(
            f"{field} is a decimal string from 0 to 100, at most 6 decimals.",
            code="invalid_percent",
            field=field,
        )
    return rate


async def create_coupon(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    *,
    code: str,
    name: str,
    percent_off: str | None,
    amount_off: str | None,
    asset_code: str | None,
    duration: str,
    duration_periods: int | None,
    product_codes: list[str] | None,
) -> Coupon:
    repository = InvoicingRepository(session, organization_id)
    if (percent_off is None) == (amount_off is None):
        raise InvalidRequest(
            "Give either percent_off or amount_off (with asset).",
            code="invalid_coupon",
            field="percent_off",
        )
    amount_off_minor = None
    if amount_off is not None:
        if asset_code is None:
            raise InvalidRequest(
                "amount_off needs its asset.", code="invalid_coupon", field="asset"
            )
        asset = await get_asset(session, organization_id, asset_code, field="asset")
        amount_off_minor = parse_amount(asset, amount_off, field="amount_off")
    if (duration == "repeating") != (duration_periods is not None):
        raise InvalidRequest(
            "duration_periods is given exactly when duration is repeating.",
            code="invalid_coupon",
            field="duration_periods",
        )
    if await repository.count(Coupon) >= limits.coupons_per_organization_max:
        raise LimitExceeded("Too many coupons.", code="coupon_limit_reached")
    if await repository.coupon_by_code(code) is not None:
        raise Conflict("A coupon has this code.", code="coupon_exists", field="code")
    coupon = Coupon(
        id=new_id("cpn"),
        organization_id=organization_id,
        code=code,
        name=name,
        kind="percentage" if percent_off is not None else "fixed",
        percent_off=None if percent_off is None else str(_percent(percent_off, "percent_off")),
        amount_off_minor=amount_off_minor,
        asset_code=asset_code if amount_off is not None else None,
        duration=duration,
        duration_periods=duration_periods,
        product_codes=product_codes,
        created_at=clock.now(),
    )
    await repository.add(coupon)
    return coupon


async def apply_coupon(
    session: AsyncSession, clock: Clock, organization_id: str, customer_ref: str, code: str
) -> tuple[CouponRedemption, Coupon]:
    """The coupon discounts the customer's next invoices (its duration's worth)."""
    repository = InvoicingRepository(session, organization_id)
    customer = await resolve_customer(session, organization_id, customer_ref, field="id")
    coupon = await repository.coupon_by_code(code)
    if coupon is None:
        raise NotFound.of("coupon", field="coupon")
    active = await repository.active_redemptions(customer.id, lock=True)
    if len(active) >= limits.coupon_redemptions_per_customer_active_max:
        raise LimitExceeded("Too many coupons on this customer.", code="coupon_limit_reached")
    redemption = CouponRedemption(
        id=new_id("cpr"),
        organization_id=organization_id,
        coupon_id=coupon.id,
        customer_id=customer.id,
        periods_used=0,
        remaining_minor=coupon.amount_off_minor,
        status="active",
        created_at=clock.now(),
    )
    await repository.add(redemption)
    return redemption, coupon


async def update_settings(
    session: AsyncSession, clock: Clock, organization_id: str, changes: dict[str, Any]
) -> InvoiceSettings:
    current = await settings_of(session, organization_id)
    stored = await InvoicingRepository(session, organization_id).settings()
    for key, value in changes.items():
        setattr(current, key, value)
    current.updated_at = clock.now()
    if stored is None:
        await InvoicingRepository(session, organization_id).add(current)
    await session.flush()
    return current


# --- credit notes -------------------------------------------------------------------

CREDIT_REASONS = (
    "duplicated_charge",
    "product_unsatisfactory",
    "order_change",
    "order_cancellation",
    "fraudulent_charge",
    "other",
)


async def create_credit_note(
    session: AsyncSession,
    clock: Clock,
    organization_id: str,
    *,
    invoice_id: str,
    reason: str,
    description: str | None,
    refund: str,
    line_amounts: list[tuple[str, str]] | None,
) -> CreditNote:
    """Credit lines of a finalized or paid invoice (all of it when no lines
    are given). Tax follows each credited amount at the invoice's exclusive
    rates. `wallet` refunds what was paid back to the customer's wallet;
    what was not yet paid lowers the balance due first."""
    invoice = await get_invoice(session, organization_id, invoice_id, lock=True)
    if invoice.status not in ("finalized", "paid", "uncollectible"):
        raise _wrong_status(invoice, "finalized, paid or uncollectible")
    repository = InvoicingRepository(session, organization_id)
    asset = await Catalog(session, organization_id).asset(invoice.asset_code)
    lines = {line.id: line for line in await repository.lines(invoice.id) if line.charged}
    wanted: list[tuple[InvoiceLine, int]] = []
    if line_amounts is None:
        wanted = [
            (line, line.amount_minor - line.credited_minor)
            for line in lines.values()
            if line.amount_minor - line.credited_minor > 0
        ]
    else:
        for index, (line_id, amount_text) in enumerate(line_amounts):
            line = lines.get(line_id)
            if line is None:
                raise NotFound.of("invoice_line", field=f"lines.{index}.line_id")
            amount_minor = parse_amount(asset, amount_text, field=f"lines.{index}.amount")
            if amount_minor > line.amount_minor - line.credited_minor:
                raise InvalidRequest(
                    "More than the line has left to credit.",
                    code="credit_exceeds_line",
                    field=f"lines.{index}.amount",
                )
            wanted.append((line, amount_minor))
    if not wanted:
        raise InvalidRequest(
            "Nothing left to credit on this invoice.", code="nothing_to_credit", field="lines"
        )
    # Credits come off the discounted amount, in the invoice's own proportion.
    subtotal = sum(amount for _, amount in wanted)
    if invoice.subtotal_minor > 0 and invoice.discount_minor:
        subtotal -= money.round_half_up(
            Decimal(subtotal) * invoice.discount_minor / invoice.subtotal_minor
        )
    tax = sum(
        money.percent_of(subtotal, Decimal(t["rate_percent"]))
        for t in invoice.taxes
        if not t["inclusive"]
    )
    total = subtotal + tax
    creditable = invoice.total_rounded_minor - invoice.credited_minor
    total = min(total, creditable)
    if total <= 0:
        raise InvalidRequest(
            "Nothing left to credit on this invoice.", code="nothing_to_credit", field="lines"
        )
    for line, amount in wanted:
        line.credited_minor += amount
    previous = await repository.credit_notes_of(invoice.id)
    base = invoice.number or invoice.id
    note = CreditNote(
        id=new_id("cn"),
        organization_id=organization_id,
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        number=f"{base}-CN{len(previous) + 1}",
        reason=reason,
        description=description,
        refund=refund,
        asset_code=invoice.asset_code,
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=total,
        lines=[
            {"line_id": line.id, "description": line.description, "amount_minor": amount}
            for line, amount in wanted
        ],
        adjustment_id=None,
        created_at=clock.now(),
    )
    # What is still due absorbs the credit first; the rest was paid and is refunded.
    from_due = min(invoice.amount_due_minor, total)
    invoice.credited_minor += total
    invoice.amount_due_minor -= from_due
    refunded = total - from_due
    if refund == "wallet" and refunded > 0:
        adjustment = await adjust_customer(
            session,
            clock,
            organization_id,
            invoice.customer_id,
            invoice.asset_code,
            refunded,
            reason="refund",
            description=f"credit note {note.number}",
        )
        note.adjustment_id = adjustment.id
    invoice.updated_at = clock.now()
    await repository.add(note)
    await webhooks.emit(
        session,
        clock,
        organization_id,
        topics.CREDIT_NOTE_CREATED,
        {
            "id": note.id,
            "invoice_id": invoice.id,
            "number": note.number,
            "asset": note.asset_code,
            "total": format_amount(asset, note.total_minor),
            "refund": refund,
        },
    )
    if invoice.status == "finalized" and invoice.amount_due_minor == 0:
        await _mark_paid(session, clock, invoice, asset)
    return note


async def get_credit_note(
    session: AsyncSession, organization_id: str, credit_note_id: str
) -> CreditNote:
    note = None
    if credit_note_id.startswith("cn_") and len(credit_note_id) <= 40:
        note = await InvoicingRepository(session, organization_id).get_credit_note(credit_note_id)
    if note is None:
        raise NotFound.of("credit_note", field="id")
    return note
