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

assert authorization_ttl_default_s <= authorization_ttl_max_s
assert authorizations_per_batch_max >= 1
