"""Invoicing: the billing run, invoices and their lines, numbering, coupons,
taxes, credit notes and PDFs."""
