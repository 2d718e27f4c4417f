#!/bin/sh
# Sending a webhook through hookrelay with curl: prefix the receiver's URL with
# http://127.0.0.1:7700/ and nothing else changes (method, headers, body, path and query).
set -eu
RECEIVER='https://receiver.example.com/hooks?tenant=42'
BODY='{"type":"order.created","order_id":"ord_1"}'

# Before: straight to the receiver; lost if it is down right now.
#   curl -X POST "$RECEIVER" -H 'Content-Type: application/json' -d "$BODY"

# After: hookrelay answers 202 once the webhook is on disk, then delivers and retries it.
curl -sS -X POST "http://127.0.0.1:7700/$RECEIVER" \
  -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: order-created-ord_1' \
  -d "$BODY"
