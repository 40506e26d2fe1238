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

# Worker housekeeping
housekeeping_interval_s = 300

assert page_size_default <= page_size_max
assert idempotency_in_flight_lease_s < idempotency_key_retention_s
assert sum(webhook_retry_delays_s) >= 3 * 24 * 3600 * 0.95
assert webhook_failing_disable_after_s <= sum(webhook_retry_delays_s) * 1.2
assert webhook_delivery_lease_s > webhook_timeout_s
assert 0 <= webhook_retry_jitter_ratio < 1
