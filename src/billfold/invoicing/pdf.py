"""Invoice and credit-note PDFs, drawn with fpdf2 (pure Python, no service).

The core fonts cover Latin-1 only; other characters are replaced so a
customer's name can never break a render.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fpdf import FPDF

from billfold.assets import AssetInfo, format_amount
from billfold.invoicing.models import CreditNote, Invoice, InvoiceLine, InvoiceSettings


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    detail: str | None


def _text(value: str) -> str:
    return value.encode("latin-1", "replace").decode("latin-1")


def _day(instant: datetime | None) -> str:
    return "-" if instant is None else instant.strftime("%Y-%m-%d")


def _money(asset: AssetInfo, amount_minor: int) -> str:
    return f"{format_amount(asset, amount_minor)} {asset.code}"


class _Document(FPDF):
    def header_block(
        self, title: str, number: str, settings: InvoiceSettings, seller: str, buyer: Party
    ) -> None:
        logo = _logo_bytes(settings.logo)
        if logo is not None:
            # A logo fpdf2 cannot read must not stop an invoice.
            with contextlib.suppress(Exception):
                self.image(io.BytesIO(logo), x=10, y=10, h=16)
        self.set_font("Helvetica", "B", 18)
        self.set_xy(110, 10)
        self.cell(90, 10, _text(title), align="R")
        self.set_font("Helvetica", "", 10)
        self.set_xy(110, 20)
        self.cell(90, 6, _text(number), align="R")
        self.set_xy(10, 32)
        self.set_font("Helvetica", "B", 11)
        self.cell(90, 6, _text(settings.legal_name or seller))
        self.set_xy(110, 32)
        self.cell(90, 6, _text("Bill to: " + buyer.name), align="R")
        self.set_font("Helvetica", "", 9)
        self.set_xy(10, 38)
        self.multi_cell(90, 5, _text(settings.address or ""))
        self.set_xy(110, 38)
        self.multi_cell(90, 5, _text(buyer.detail or ""), align="R")
        self.set_y(max(self.get_y(), 58))

    def row(self, cells: Sequence[str], widths: Sequence[int], *, bold: bool = False) -> None:
        self.set_font("Helvetica", "B" if bold else "", 9)
        for index, (text, width) in enumerate(zip(cells, widths, strict=True)):
            self.cell(width, 6, _text(text), align="L" if index == 0 else "R")
        self.ln(6)


def _logo_bytes(logo: str | None) -> bytes | None:
    if not logo or not logo.startswith("data:image/") or "," not in logo:
        return None
    try:
        return base64.b64decode(logo.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        return None


_WIDTHS = (100, 30, 60)


def invoice_pdf(
    invoice: Invoice,
    lines: Sequence[InvoiceLine],
    asset: AssetInfo,
    settings: InvoiceSettings,
    seller: str,
    buyer: Party,
) -> bytes:
    pdf = _Document(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    number = invoice.number or "DRAFT"
    pdf.header_block("Invoice", f"No. {number}", settings, seller, buyer)
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(
        0,
        5,
        _text(
            f"Issued {_day(invoice.finalized_at or invoice.created_at)}   "
            f"Due {_day(invoice.due_at)}   "
            f"Period {_day(invoice.period_start)} to {_day(invoice.period_end)}   "
            f"Status {invoice.status}"
        ),
    )
    pdf.ln(9)
    pdf.row(("Description", "Quantity", "Amount"), _WIDTHS, bold=True)
    for line in lines:
        amount = _money(asset, line.amount_minor)
        if not line.charged:
            amount = f"({amount}, paid)"
        pdf.row((line.description, line.quantity, amount), _WIDTHS)
        for tier in line.tiers:
            if tier["units"] == "0" and not tier["amount_minor"]:
                continue
            label = "  " + (
                f"tier {tier['tier'] + 1}" if tier["tier"] is not None else str(tier["kind"])
            )
            label += f": {tier['units']} x {tier['unit_amount']}"
            if tier["flat_amount"] not in ("0", None):
                label += f" + {tier['flat_amount']}"
            pdf.row((label, "", _money(asset, tier["amount_minor"])), _WIDTHS)
    pdf.ln(3)
    pdf.row(("Subtotal", "", _money(asset, invoice.subtotal_minor)), _WIDTHS)
    for discount in invoice.discounts:
        pdf.row(
            (f"Discount {discount['coupon']}", "", _money(asset, -discount["amount_minor"])),
            _WIDTHS,
        )
    for tax in invoice.taxes:
        kind = "included" if tax["inclusive"] else "added"
        pdf.row(
            (
                f"{tax['name']} {tax['rate_percent']}% ({kind})",
                "",
                _money(asset, tax["amount_minor"]),
            ),
            _WIDTHS,
        )
    if invoice.rounding_minor:
        pdf.row(("Rounding", "", _money(asset, invoice.rounding_minor)), _WIDTHS)
    pdf.row(("Total", "", _money(asset, invoice.total_rounded_minor)), _WIDTHS, bold=True)
    if invoice.paid_minor:
        pdf.row(("Paid", "", _money(asset, -invoice.paid_minor)), _WIDTHS)
    if invoice.credited_minor:
        pdf.row(("Credited", "", _money(asset, -invoice.credited_minor)), _WIDTHS)
    pdf.row(("Amount due", "", _money(asset, invoice.amount_due_minor)), _WIDTHS, bold=True)
    return bytes(pdf.output())


def credit_note_pdf(
    note: CreditNote,
    invoice: Invoice,
    asset: AssetInfo,
    settings: InvoiceSettings,
    seller: str,
    buyer: Party,
) -> bytes:
    pdf = _Document(format="A4")
    pdf.add_page()
    pdf.header_block("Credit note", f"No. {note.number}", settings, seller, buyer)
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(
        0,
        5,
        _text(
            f"Issued {_day(note.created_at)}   Invoice {invoice.number or invoice.id}   "
            f"Reason {note.reason}   Refund {note.refund}"
        ),
    )
    pdf.ln(9)
    pdf.row(("Description", "", "Amount"), _WIDTHS, bold=True)
    for line in note.lines:
        pdf.row((line["description"], "", _money(asset, line["amount_minor"])), _WIDTHS)
    pdf.ln(3)
    pdf.row(("Subtotal", "", _money(asset, note.subtotal_minor)), _WIDTHS)
    pdf.row(("Tax", "", _money(asset, note.tax_minor)), _WIDTHS)
    pdf.row(("Total credited", "", _money(asset, note.total_minor)), _WIDTHS, bold=True)
    return bytes(pdf.output())
