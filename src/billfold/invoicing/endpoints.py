from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from billfold.api.boundary import BoundaryRoute
from billfold.api.deps import CurrentClock, CurrentPrincipal, Pagination, Session
from billfold.api.problems import error_responses
from billfold.api.schemas import Page, page_of
from billfold.assets import AssetInfo, format_amount, get_asset
from billfold.customers import resolve_customer
from billfold.invoicing import pdf, service
from billfold.invoicing.models import (
    Coupon,
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceSettings,
    TaxRate,
)
from billfold.invoicing.repository import InvoicingRepository
from billfold.invoicing.schemas import (
    CouponApply,
    CouponCreate,
    CouponOut,
    CouponRedemptionOut,
    CreditNoteCreate,
    CreditNoteOut,
    DiscountOut,
    InvoiceLineOut,
    InvoiceOut,
    InvoiceSettingsIn,
    InvoiceSettingsOut,
    InvoiceSummaryOut,
    TaxOut,
    TaxRateCreate,
    TaxRateOut,
)
from billfold.organizations.service import Principal

router = APIRouter(prefix="/v1", tags=["invoices"], route_class=BoundaryRoute)

_PDF: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {}}, "description": "The PDF."}
}


def _line_out(asset: AssetInfo, line: InvoiceLine) -> InvoiceLineOut:
    return InvoiceLineOut(
        id=line.id,
        kind=line.kind,
        price_code=line.price_code,
        description=line.description,
        quantity=line.quantity,
        amount=format_amount(asset, line.amount_minor),
        charged=line.charged,
        period_start=line.period_start,
        period_end=line.period_end,
        tiers=[
            {
                **{k: v for k, v in tier.items() if k != "amount_minor"},
                "amount": format_amount(asset, tier["amount_minor"]),
            }
            for tier in line.tiers
        ],
        credited=format_amount(asset, line.credited_minor),
    )


async def _invoice_out(session: Session, principal: Principal, invoice: Invoice) -> InvoiceOut:
    asset = await get_asset(session, principal.organization_id, invoice.asset_code)
    lines = await InvoicingRepository(session, principal.organization_id).lines(invoice.id)
    money = format_amount
    return InvoiceOut(
        id=invoice.id,
        number=invoice.number,
        status=invoice.status,
        kind=invoice.kind,
        customer_id=invoice.customer_id,
        subscription_id=invoice.subscription_id,
        asset=invoice.asset_code,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        subtotal=money(asset, invoice.subtotal_minor),
        discount=money(asset, invoice.discount_minor),
        tax=money(asset, invoice.tax_minor),
        total_exact=money(asset, invoice.total_minor),
        rounding=money(asset, invoice.rounding_minor),
        total=money(asset, invoice.total_rounded_minor),
        paid=money(asset, invoice.paid_minor),
        credited=money(asset, invoice.credited_minor),
        amount_due=money(asset, invoice.amount_due_minor),
        taxes=[
            TaxOut(
                code=t["code"],
                name=t["name"],
                rate_percent=t["rate_percent"],
                inclusive=t["inclusive"],
                taxable=money(asset, t["taxable_minor"]),
                amount=money(asset, t["amount_minor"]),
            )
            for t in invoice.taxes
        ],
        discounts=[
            DiscountOut(coupon=d["coupon"], amount=money(asset, d["amount_minor"]))
            for d in invoice.discounts
        ],
        lines=[_line_out(asset, line) for line in lines],
        created_at=invoice.created_at,
        finalize_at=invoice.finalize_at,
        finalized_at=invoice.finalized_at,
        due_at=invoice.due_at,
        paid_at=invoice.paid_at,
        voided_at=invoice.voided_at,
    )


@router.get("/invoices", responses=error_responses(404))
async def list_invoices(
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    customer_id: Annotated[
        str | None, Query(max_length=300, description="`cus_…` or `ext:<external_id>`")
    ] = None,
) -> Page[InvoiceSummaryOut]:
    """Invoices, newest first; one customer's with `customer_id`."""
    organization_id = principal.organization_id
    customer = None
    if customer_id is not None:
        customer = (
            await resolve_customer(session, organization_id, customer_id, field="customer_id")
        ).id
    rows = await InvoicingRepository(session, organization_id).list_page(
        page.limit + 1, page.starting_after, customer
    )
    out = []
    for invoice in rows:
        asset = await get_asset(session, organization_id, invoice.asset_code)
        out.append(
            InvoiceSummaryOut(
                id=invoice.id,
                number=invoice.number,
                status=invoice.status,
                customer_id=invoice.customer_id,
                subscription_id=invoice.subscription_id,
                asset=invoice.asset_code,
                period_start=invoice.period_start,
                period_end=invoice.period_end,
                total=format_amount(asset, invoice.total_rounded_minor),
                amount_due=format_amount(asset, invoice.amount_due_minor),
            )
        )
    return page_of(out, page.limit)


@router.get("/invoices/{invoice_id}", responses=error_responses(404))
async def get_invoice(invoice_id: str, session: Session, principal: CurrentPrincipal) -> InvoiceOut:
    invoice = await service.get_invoice(session, principal.organization_id, invoice_id)
    return await _invoice_out(session, principal, invoice)


async def _parties(
    session: Session, organization_id: str, customer_id: str
) -> tuple[str, pdf.Party, InvoiceSettings]:
    settings = await service.settings_of(session, organization_id)
    customer = await resolve_customer(session, organization_id, customer_id)
    seller = await service.organization_name(session, organization_id)
    buyer = pdf.Party(customer.name or customer.external_id, customer.email)
    return seller, buyer, settings


@router.get(
    "/invoices/{invoice_id}/pdf", response_class=Response, responses=_PDF | error_responses(404)
)
async def get_invoice_pdf(
    invoice_id: str, session: Session, principal: CurrentPrincipal
) -> Response:
    """The invoice as a PDF a customer can be sent."""
    organization_id = principal.organization_id
    invoice = await service.get_invoice(session, organization_id, invoice_id)
    asset = await get_asset(session, organization_id, invoice.asset_code)
    lines = await InvoicingRepository(session, organization_id).lines(invoice.id)
    seller, buyer, settings = await _parties(session, organization_id, invoice.customer_id)
    body = pdf.invoice_pdf(invoice, lines, asset, settings, seller, buyer)
    name = invoice.number or invoice.id
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
    )


@router.post("/invoices/{invoice_id}/finalize", responses=error_responses(404))
async def finalize_invoice(
    invoice_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> InvoiceOut:
    """Finalize a draft now (recomputed, numbered, immutable); 409 `invoice_status_invalid`
    otherwise."""
    invoice = await service.finalize(session, clock, principal.organization_id, invoice_id)
    return await _invoice_out(session, principal, invoice)


@router.post("/invoices/{invoice_id}/void", responses=error_responses(404))
async def void_invoice(
    invoice_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> InvoiceOut:
    """Void a finalized invoice nothing was paid on (refund a paid one with a credit note)."""
    invoice = await service.void(session, clock, principal.organization_id, invoice_id)
    return await _invoice_out(session, principal, invoice)


@router.post("/invoices/{invoice_id}/mark-paid", responses=error_responses(404))
async def mark_invoice_paid(
    invoice_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> InvoiceOut:
    """Record that the balance due was paid outside Billfold."""
    invoice = await service.mark_paid(session, clock, principal.organization_id, invoice_id)
    return await _invoice_out(session, principal, invoice)


@router.post("/invoices/{invoice_id}/mark-uncollectible", responses=error_responses(404))
async def mark_invoice_uncollectible(
    invoice_id: str, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> InvoiceOut:
    invoice = await service.mark_uncollectible(
        session, clock, principal.organization_id, invoice_id
    )
    return await _invoice_out(session, principal, invoice)


async def _credit_note_out(
    session: Session, organization_id: str, note: CreditNote
) -> CreditNoteOut:
    asset = await get_asset(session, organization_id, note.asset_code)
    return CreditNoteOut(
        id=note.id,
        number=note.number,
        invoice_id=note.invoice_id,
        customer_id=note.customer_id,
        reason=note.reason,
        description=note.description,
        refund=note.refund,
        asset=note.asset_code,
        subtotal=format_amount(asset, note.subtotal_minor),
        tax=format_amount(asset, note.tax_minor),
        total=format_amount(asset, note.total_minor),
        lines=[
            {
                "line_id": line["line_id"],
                "description": line["description"],
                "amount": format_amount(asset, line["amount_minor"]),
            }
            for line in note.lines
        ],
        created_at=note.created_at,
    )


@router.post("/credit-notes", status_code=201, responses=error_responses(404))
async def create_credit_note(
    body: CreditNoteCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> CreditNoteOut:
    """Credit a finalized invoice, whole or per line, with a reason; refund what
    was paid to the wallet or record an external refund."""
    note = await service.create_credit_note(
        session,
        clock,
        principal.organization_id,
        invoice_id=body.invoice_id,
        reason=body.reason,
        description=body.description,
        refund=body.refund,
        line_amounts=None
        if body.lines is None
        else [(line.line_id, line.amount) for line in body.lines],
    )
    return await _credit_note_out(session, principal.organization_id, note)


@router.get("/credit-notes/{credit_note_id}", responses=error_responses(404))
async def get_credit_note(
    credit_note_id: str, session: Session, principal: CurrentPrincipal
) -> CreditNoteOut:
    note = await service.get_credit_note(session, principal.organization_id, credit_note_id)
    return await _credit_note_out(session, principal.organization_id, note)


@router.get(
    "/credit-notes/{credit_note_id}/pdf",
    response_class=Response,
    responses=_PDF | error_responses(404),
)
async def get_credit_note_pdf(
    credit_note_id: str, session: Session, principal: CurrentPrincipal
) -> Response:
    organization_id = principal.organization_id
    note = await service.get_credit_note(session, organization_id, credit_note_id)
    invoice = await service.get_invoice(session, organization_id, note.invoice_id)
    asset = await get_asset(session, organization_id, note.asset_code)
    seller, buyer, settings = await _parties(session, organization_id, note.customer_id)
    body = pdf.credit_note_pdf(note, invoice, asset, settings, seller, buyer)
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{note.number}.pdf"'},
    )


def _tax_out(rate: TaxRate) -> TaxRateOut:
    return TaxRateOut.model_validate(rate)


@router.post("/tax-rates", status_code=201, responses=error_responses(404))
async def create_tax_rate(
    body: TaxRateCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> TaxRateOut:
    """A tax on invoices: every customer's (no `customer_id`) or one customer's
    (it then replaces the defaults for that customer)."""
    rate = await service.create_tax_rate(
        session,
        clock,
        principal.organization_id,
        code=body.code,
        name=body.name,
        rate_percent=body.rate_percent,
        inclusive=body.inclusive,
        customer_ref=body.customer_id,
    )
    return _tax_out(rate)


@router.get("/tax-rates", responses=error_responses())
async def list_tax_rates(
    session: Session, principal: CurrentPrincipal, page: Pagination
) -> Page[TaxRateOut]:
    rows = await InvoicingRepository(session, principal.organization_id).list_tax_rates(
        page.limit + 1, page.starting_after
    )
    return page_of([_tax_out(rate) for rate in rows], page.limit)


async def _coupon_out(session: Session, principal: Principal, coupon: Coupon) -> CouponOut:
    amount_off = None
    if coupon.amount_off_minor is not None and coupon.asset_code is not None:
        asset = await get_asset(session, principal.organization_id, coupon.asset_code)
        amount_off = format_amount(asset, coupon.amount_off_minor)
    return CouponOut(
        id=coupon.id,
        code=coupon.code,
        name=coupon.name,
        percent_off=coupon.percent_off,
        amount_off=amount_off,
        asset=coupon.asset_code,
        duration=coupon.duration,
        duration_periods=coupon.duration_periods,
        products=coupon.product_codes,
        created_at=coupon.created_at,
    )


@router.post("/coupons", status_code=201, responses=error_responses(404))
async def create_coupon(
    body: CouponCreate, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> CouponOut:
    """A percentage or fixed discount, once, repeating N invoices, or forever,
    optionally limited to some products. Applied before taxes."""
    coupon = await service.create_coupon(
        session,
        clock,
        principal.organization_id,
        code=body.code,
        name=body.name,
        percent_off=body.percent_off,
        amount_off=body.amount_off,
        asset_code=body.asset,
        duration=body.duration,
        duration_periods=body.duration_periods,
        product_codes=body.products,
    )
    return await _coupon_out(session, principal, coupon)


@router.post("/customers/{customer_id}/coupons", status_code=201, responses=error_responses(404))
async def apply_coupon(
    customer_id: str,
    body: CouponApply,
    session: Session,
    principal: CurrentPrincipal,
    clock: CurrentClock,
) -> CouponRedemptionOut:
    redemption, coupon = await service.apply_coupon(
        session, clock, principal.organization_id, customer_id, body.coupon
    )
    return CouponRedemptionOut(
        id=redemption.id,
        coupon=coupon.code,
        customer_id=redemption.customer_id,
        status=redemption.status,
        periods_used=redemption.periods_used,
        created_at=redemption.created_at,
    )


@router.get("/invoice-settings", responses=error_responses())
async def get_invoice_settings(session: Session, principal: CurrentPrincipal) -> InvoiceSettingsOut:
    return InvoiceSettingsOut.model_validate(
        await service.settings_of(session, principal.organization_id)
    )


@router.patch("/invoice-settings", responses=error_responses(413, 415))
async def update_invoice_settings(
    body: InvoiceSettingsIn, session: Session, principal: CurrentPrincipal, clock: CurrentClock
) -> InvoiceSettingsOut:
    """Change the numbering prefix, grace period, terms, wallet payment and branding."""
    changes = body.model_dump(exclude_unset=True)
    settings = await service.update_settings(session, clock, principal.organization_id, changes)
    return InvoiceSettingsOut.model_validate(settings)
