"""Every limit Billfold enforces, in one place.

Names end in their unit. Relations between limits are asserted at import so a
bad edit fails loudly at start-up rather than at 3 a.m. in production.
"""

from __future__ import annotations

# HTTP
request_body_bytes_max = 1_048_576
page_size_default = 20
page_size_max = 100
idempotency_key_length_max = 255
idempotency_key_retention_s = 24 * 3600
# A request that claimed a key but never finished (its process died) frees the
# key after this long, so a client's retry can go through.
idempotency_in_flight_lease_s = 60

# Organizations and keys
organization_name_length_max = 200
api_key_name_length_max = 200
api_keys_per_organization_max = 100
gateway_key_name_length_max = 200
gateway_keys_per_customer_max = 20
# A model request may carry images and documents inline (base64).
gateway_request_body_bytes_max = 32 * 1_048_576
# How long the gateway's queued usage events wait for others to share their
# ingest transaction. They are queued durably (gateway_settlements), so
# waiting risks nothing, and one ingest of a few events costs far less than
# one each (bench/gateway_latency.py).
gateway_settle_linger_s = 0.1
# How often the gateway looks for queued events no process is ingesting.
gateway_settlement_poll_s = 1.0
# Under `billfold gateway` a settler process ingests the queue; a server
# process takes a row only once it has waited this long (the settler died or
# is far behind), so no answered call goes unbilled either way.
gateway_settlement_stale_s = 10.0
# How long a starting gateway waits for its settler process, and a stopping
# one for it to ingest what is queued.
gateway_settler_start_s = 60.0
gateway_settler_stop_s = 60.0
# How long a gateway call named by an Idempotency-Key holds that key against
# repeats: the longest a call runs (a 600 s read from the provider, then up
# to 60 s draining a stream its client left). Past it, the holder is taken
# for dead and a repeat runs the call.
gateway_call_lease_s = 660.0
# How long a gateway process reuses what it read to authenticate a key and to
# estimate a call (the key's customer, that customer's real-time prices, the
# LLM price book, the cost policy): five queries per call otherwise, 2.5-4 ms
# of the gateway's latency on its benchmark. A revoked key, a new
# subscription or a new price reaches the gateway's holds this much later;
# what a call is charged is always rated afresh. `--lookup-ttl 0` turns it off.
gateway_lookup_ttl_s = 1.0
gateway_lookups_cached_max = 10_000

# Webhooks
webhook_endpoints_per_organization_max = 20
webhook_url_length_max = 2048
webhook_topics_per_endpoint_max = 100
webhook_secret_bytes = 32
webhook_secret_rotation_grace_s = 24 * 3600
webhook_timeout_s = 15
webhook_response_body_stored_bytes_max = 2048
# Standard Webhooks' recommended schedule after the first attempt: about
# 75 hours in all, close to Stripe's three days.
webhook_retry_delays_s: tuple[int, ...] = (
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
)
webhook_retry_jitter_ratio = 0.1
# An endpoint whose deliveries have failed without a single success for this
# long is disabled.
webhook_failing_disable_after_s = 3 * 24 * 3600
webhook_deliveries_per_poll_max = 50
webhook_poll_interval_s = 1.0
webhook_delivery_lease_s = 60
webhook_concurrent_deliveries_max = 16

# Assets, amounts and exchange rates
# The largest amount of any asset, in minor units: fits a signed 64-bit BIGINT
# with room for sums of a few of them.
amount_minor_max = 10**18
# A decimal string amount, sign and point included; longer is refused unread.
amount_string_length_max = 64
asset_code_length_max = 20
asset_name_length_max = 100
asset_symbol_length_max = 8
asset_scale_max = 18
custom_assets_per_organization_max = 1000
rate_string_length_max = 64
rate_decimals_max = 18
rate_significant_digits_max = 30
exchange_rates_per_pair_max = 10_000
# An RFC 3339 timestamp given as text (`valid_from`, `at`).
timestamp_string_length_max = 64

# Customers
customer_external_id_length_max = 255
customer_name_length_max = 200
customer_email_length_max = 254
customer_metadata_keys_max = 50
customer_metadata_key_length_max = 40
customer_metadata_value_length_max = 500

# Worker housekeeping
housekeeping_interval_s = 300
# Rollup deltas one worker statement moves into the rollups (PostgreSQL).
# Ingest appends about one per customer and hour of each batch; a worker
# with a backlog moves batch after batch without sleeping.
rollup_deltas_per_compaction_max = 10_000

assert page_size_default <= page_size_max
assert idempotency_in_flight_lease_s < idempotency_key_retention_s
assert sum(webhook_retry_delays_s) >= 3 * 24 * 3600 * 0.95
assert webhook_failing_disable_after_s <= sum(webhook_retry_delays_s) * 1.2
# Jitter only lengthens delays, so a delivery that fails throughout outlives
# the disable threshold: its endpoint is disabled, not left failing quietly.
assert webhook_failing_disable_after_s <= sum(webhook_retry_delays_s)
assert webhook_delivery_lease_s > webhook_timeout_s
assert 0 <= webhook_retry_jitter_ratio < 1
assert amount_minor_max < 2**63
# At the largest scale an asset can still hold at least one whole unit.
assert 10**asset_scale_max <= amount_minor_max
assert rate_decimals_max < rate_significant_digits_max
assert rate_significant_digits_max + 2 < rate_string_length_max

# Caches
#: Per process: immutable rows (product versions, meters) kept in memory (billfold.frozen).
frozen_rows_cached_max = 10_000

# Authorizations (holds)
authorization_ttl_default_s = 600
authorization_ttl_max_s = 24 * 3600
# A batch is what queued while the previous one committed; this bounds its
# transaction's size and the latency of its last member.
authorizations_per_batch_max = 512
authorization_metadata_keys_max = 50

# Wallets and grants
grant_priority_max = 1000
adjustment_description_length_max = 500
wallet_sweep_batch_max = 100
# How far usage may run a wallet into debt. Usage is never refused, so only a
# bug or an absurd price gets here; the batch then fails and is retried.
wallet_debt_minor_max = amount_minor_max

assert authorization_ttl_default_s <= authorization_ttl_max_s
assert authorizations_per_batch_max >= 1

# Metering: events
events_per_batch_max = 1000
# Rows per INSERT statement when a batch is written; below both backends'
# bind-parameter ceilings (SQLite 32,766, PostgreSQL 65,535) at 10 per row.
events_insert_rows_per_statement_max = 1000
# Ids per `IN (…)` lookup of stored events.
events_lookup_ids_per_query_max = 1000
event_id_length_max = 255
event_type_length_max = 100
# How far back an event's timestamp may be, by default; the deployment may set
# another window (BILLFOLD_EVENT_BACKFILL_WINDOW_S) up to the maximum.
event_backfill_window_default_s = 35 * 24 * 3600
event_backfill_window_max_s = 400 * 24 * 3600
# How far ahead of the server clock an event's timestamp may be.
event_future_skew_max_s = 5 * 60
# `data` as canonical JSON text.
event_data_bytes_max = 16_384
event_data_depth_max = 8
event_data_key_length_max = 200
# A number in `data`, written in plain decimal notation (sign and point included).
event_number_length_max = 48
event_costs_max = 50
event_authorization_id_length_max = 64

# Metering: meters and usage
meters_per_organization_max = 1000
meter_code_length_max = 64
meter_name_length_max = 200
# A dotted path into `data` ("usage.tokens.output").
meter_path_length_max = 200
meter_path_segments_max = event_data_depth_max
meter_filter_keys_max = 10
meter_filter_values_max = 100
meter_filter_value_length_max = 200
meter_group_by_max = 5
usage_buckets_max = 2000
usage_rows_max = 10_000

assert events_insert_rows_per_statement_max * 10 < 32_766
assert event_backfill_window_default_s <= event_backfill_window_max_s
assert meter_path_segments_max <= event_data_depth_max
assert usage_buckets_max <= usage_rows_max

# Rating (pure pricing functions, billfold.rating)
# One rated quantity (a period's total or an event's), in its meter's units:
# 10**15 tokens with 9 decimals is a billion customers' million each.
rating_quantity_max = 10**15
rating_quantity_decimals_max = 9
rating_quantity_string_length_max = 64
# Unit prices and percentages are rates, not amounts: they may be finer than
# the asset's scale, because rounding happens once, on the rated total.
price_unit_amount_decimals_max = 18
price_unit_amount_significant_digits_max = 30
price_unit_amount_string_length_max = 64
price_tiers_max = 100
price_dimensions_max = 500
price_dimension_keys_max = 10
price_dimension_values_per_key_max = 100
price_dimension_key_length_max = 100
price_dimension_value_length_max = 200
# Digits of the Decimal context rating computes in. Every rounding signal is
# trapped there, so this must hold the largest exact intermediate.
rating_decimal_precision = 120

assert price_unit_amount_decimals_max < price_unit_amount_significant_digits_max
assert price_unit_amount_significant_digits_max + 2 < price_unit_amount_string_length_max
assert len(str(rating_quantity_max)) + rating_quantity_decimals_max + 2 < (
    rating_quantity_string_length_max
)
# quantity × unit price (or rate / 100), summed over every tier, plus amounts
# of any scale: integer digits + fraction digits + carries of the sum.
assert (
    len(str(rating_quantity_max))
    + price_unit_amount_significant_digits_max
    + rating_quantity_decimals_max
    + max(price_unit_amount_decimals_max + 2, asset_scale_max)
    + len(str(price_tiers_max))
    + 1
) <= rating_decimal_precision
# A package count (quantity / smallest package) times the largest amount.
assert (
    len(str(rating_quantity_max)) + 2 * rating_quantity_decimals_max + len(str(amount_minor_max))
    <= rating_decimal_precision
)

# Catalog: products, versions, prices, features
products_per_organization_max = 10_000
product_versions_per_product_max = 1000
product_code_length_max = 64
product_name_length_max = 200
prices_per_version_max = 100
features_per_version_max = 200
price_code_length_max = 64
feature_code_length_max = 64
# Events one simulate request rates; nothing is stored, the request is bounded.
simulate_events_max = 1000

# Subscriptions (minimal: a customer on a product version)
subscriptions_per_customer_active_max = 100

assert prices_per_version_max <= 1000
assert simulate_events_max <= events_per_batch_max

# Subscriptions and invoicing
subscription_interval_count_max = 100
# A trial of at most a year, given in days.
subscription_trial_days_max = 366
invoice_number_prefix_length_max = 10
# PREFIX-YYYY-NNNNNN (the counter may grow past six digits).
invoice_number_length_max = 32
invoice_address_length_max = 500
invoice_logo_length_max = 200_000
invoice_grace_period_max_s = 31 * 24 * 3600
invoice_net_terms_days_max = 365
tax_rates_per_organization_max = 1000
coupons_per_organization_max = 10_000
coupon_redemptions_per_customer_active_max = 20
credit_note_lines_max = 200
# Subscriptions the billing run reads per due-list query.
billing_run_batch_size = 1000
# Subscriptions of one organization billed in one transaction, their usage
# read in one query per price and period; a failing group is retried one
# subscription per transaction, so one bad subscription cannot stop the run.
billing_run_group_size = 100
# Periods one subscription closes per run (a subscription started years in
# the past catches up over several runs rather than in one unbounded loop).
billing_run_periods_per_subscription_max = 120

assert invoice_number_prefix_length_max + 16 <= invoice_number_length_max

# Vendor costs and LLM prices (costs/, llmcost/)
vendors_per_organization_max = 1000
vendor_code_length_max = 64
vendor_name_length_max = 200
costs_per_event_max = 20
cost_id_length_max = 255
cost_category_length_max = 64
llm_model_length_max = 200
llm_price_overrides_per_organization_max = 1000
llm_price_table_bytes_max = 20_000_000
# Profitability reads the rows of its range into memory: past this many it
# asks for a shorter range instead of answering slowly.
profitability_rows_max = 500_000
profitability_groups_max = 1000
cost_alert_window_days_max = 366
# How often `serve`/`worker` runs the billing run.
billing_run_interval_s = 60
