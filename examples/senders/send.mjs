// Sending a webhook through hookrelay with Node's fetch (Node 18+, no dependencies).
//
// The one-line change: prefix the receiver's URL with http://127.0.0.1:7700/. A 202 means the
// webhook is stored durably; hookrelay delivers it and retries failures with backoff.

const HOOKRELAY = 'http://127.0.0.1:7700/';
const receiverUrl = 'https://receiver.example.com/hooks?tenant=42';
const event = { type: 'order.created', order_id: 'ord_1' };

// Before:
//   const resp = await fetch(receiverUrl, { method: 'POST', ... });
// After:
const resp = await fetch(HOOKRELAY + receiverUrl, {
  method: 'POST',
  headers: {
    'Content-Type': 'application/json',
    // Same key, same body: hookrelay answers 200 with the original delivery instead of a duplicate.
    'Idempotency-Key': 'order-created-ord_1',
  },
  body: JSON.stringify(event),
});
if (!resp.ok) throw new Error(`hookrelay refused the webhook: ${resp.status} ${await resp.text()}`);
console.log(resp.status, resp.headers.get('hookrelay-delivery-id'), await resp.json());
