// node --test examples/receivers/  (run by .ci/run)
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';

import { verifyWebhook, WebhookVerificationError } from './verify_standard_webhooks.mjs';

// The Standard Webhooks specification's test vector.
const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const id = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
const timestamp = 1614265330;
const body = '{"test": 2432232314}';
const signature = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
const headers = (sig, ts = String(timestamp)) => ({
  'webhook-id': id,
  'webhook-timestamp': ts,
  'webhook-signature': sig,
});
const at = { nowSeconds: timestamp };

test('accepts the specification vector, as a string or bytes', () => {
  assert.equal(verifyWebhook(secret, headers(signature), body, at), true);
  assert.equal(verifyWebhook(secret, headers(signature), Buffer.from(body), at), true);
});

test('accepts any valid v1 signature among several', () => {
  const sigs = `v2,abc v1,${Buffer.alloc(32).toString('base64')} ${signature}`;
  assert.equal(verifyWebhook(secret, headers(sigs), body, at), true);
});

test('refuses a changed body, id or signature', () => {
  const refused = (h, b) =>
    assert.throws(() => verifyWebhook(secret, h, b, at), WebhookVerificationError);
  refused(headers(signature), body + ' ');
  refused({ ...headers(signature), 'webhook-id': 'msg_other' }, body);
  refused(headers('v1,' + Buffer.alloc(32).toString('base64')), body);
  refused(headers('v1,short'), body);
  refused(headers(signature.replace('v1,', 'v2,')), body);
  refused({ 'webhook-id': id }, body);
});

test('refuses timestamps outside five minutes', () => {
  const sign = (ts) =>
    'v1,' + createHmac('sha256', Buffer.from(secret.slice(6), 'base64')).update(`${id}.${ts}.${body}`).digest('base64');
  const now = timestamp;
  for (const [ts, ok] of [[now - 299, true], [now + 299, true], [now - 301, false], [now + 301, false]]) {
    const run = () => verifyWebhook(secret, headers(sign(ts), String(ts)), body, { nowSeconds: now });
    if (ok) assert.equal(run(), true, `ts offset ${ts - now}`);
    else assert.throws(run, /tolerance/, `ts offset ${ts - now}`);
  }
  assert.throws(() => verifyWebhook(secret, headers(signature, '12ab'), body, at), /number/);
});

// RFC 8032's first test key as hookrelay's `whsk_`/`whpk_`, and hookrelay's `v1a` signature of the
// specification's message with it (the same value as src/sign.rs's unit test, which Python's
// `cryptography` computed independently).
const publicKey = 'whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=';
const edSignature =
  'v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw==';

test('verifies an ed25519 (v1a) signature with the whpk_ public key', () => {
  assert.equal(verifyWebhook(publicKey, headers(edSignature), body, at), true);
  assert.equal(verifyWebhook(publicKey, headers(`${signature} ${edSignature}`), body, at), true);
  // The HMAC secret still checks the v1 entry of a header that carries both.
  assert.equal(verifyWebhook(secret, headers(`${edSignature} ${signature}`), body, at), true);
});

test('refuses an ed25519 signature of anything else', () => {
  const refused = (h, b, key = publicKey) =>
    assert.throws(() => verifyWebhook(key, h, b, at), WebhookVerificationError);
  refused(headers(edSignature), body + ' ');
  refused({ ...headers(edSignature), 'webhook-id': 'msg_other' }, body);
  refused(headers(edSignature, String(timestamp + 1)), body);
  refused(headers(signature), body); // a v1 entry is not checked with a public key
  refused(headers(edSignature.replace('v1a,', 'v1,')), body);
  refused(headers(edSignature), body, 'whpk_' + Buffer.alloc(32, 1).toString('base64'));
});
