"""Sending a webhook through hookrelay with Python requests (pip install requests).

The one-line change: prefix the receiver's URL with http://127.0.0.1:7700/. A 202 means the
webhook is stored durably; hookrelay delivers it and retries failures with backoff.
"""

import json

import requests

HOOKRELAY = "http://127.0.0.1:7700/"
receiver_url = "https://receiver.example.com/hooks?tenant=42"
event = {"type": "order.created", "order_id": "ord_1"}
# The body as bytes, compact as the other examples send it: an idempotency key matches a repeat
# only with the same bytes (a different body under the same key is 422 idempotency_key_reused).
body = json.dumps(event, separators=(",", ":"))

# Before:
#   resp = requests.post(receiver_url, json=event, timeout=10)
# After:
resp = requests.post(
    HOOKRELAY + receiver_url,
    data=body,
    # Same key, same body: hookrelay answers 200 with the original delivery instead of a duplicate.
    headers={"Content-Type": "application/json", "Idempotency-Key": "order-created-ord_1"},
    timeout=10,
)
resp.raise_for_status()  # 202 accepted (or 200 duplicate); 503 = hookrelay is shutting down, retry
print(resp.status_code, resp.headers["hookrelay-delivery-id"], resp.json())
