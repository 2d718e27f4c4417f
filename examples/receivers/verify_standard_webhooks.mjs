// Verifies Standard Webhooks signatures (https://www.standardwebhooks.com), as hookrelay sends them
// for endpoints with a `secret`: HMAC (`v1`) with the endpoint's `whsec_` secret, or ed25519
// (`v1a`) with the `whpk_` public key of its `whsk_` secret. No dependencies: Node 18+.
//
// As a library:
//   import { verifyWebhook } from './verify_standard_webhooks.mjs';
//   verifyWebhook(process.env.WEBHOOK_SECRET, req.headers, rawBodyBuffer); // throws if invalid
//
// As a receiver (what examples/compose runs):
//   WEBHOOK_SECRET=whsec_... PORT=8080 node verify_standard_webhooks.mjs   (or WEBHOOK_SECRET=whpk_...)
// answers 204 to a valid webhook and 401 otherwise. Without WEBHOOK_SECRET it accepts everything
// and says so in its log (for trying hookrelay before signing is set up).
//
// Verify over the raw body bytes, before any JSON parsing: re-serialised JSON will not match.

import { createHmac, createPublicKey, timingSafeEqual, verify } from 'node:crypto';
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';

/** Signatures older or newer than this are refused, so a captured webhook cannot be replayed later. */
export const TOLERANCE_SECONDS = 5 * 60;

export class WebhookVerificationError extends Error {}

/**
 * Checks the `webhook-signature` header: a `v1` entry against HMAC-SHA256 of "id.timestamp.body"
 * with a `whsec_` secret, or a `v1a` entry as the ed25519 signature of the same with a `whpk_`
 * public key.
 * @param {string} secret `whsec_` followed by the base64 key (the prefix is optional), or
 *   `whpk_` followed by the base64 ed25519 public key.
 * @param {Record<string, string | string[] | undefined>} headers lower-case names, as Node gives them.
 * @param {Buffer | string} body the raw request body.
 * @param {{ nowSeconds?: number, toleranceSeconds?: number }} [options]
 * @returns {true} or throws WebhookVerificationError.
 */
export function verifyWebhook(secret, headers, body, options = {}) {
  const nowSeconds = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceSeconds ?? TOLERANCE_SECONDS;
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (!id || !timestamp || !signatures) {
    throw new WebhookVerificationError('missing webhook-id, webhook-timestamp or webhook-signature');
  }
  if (!/^\d+$/.test(timestamp)) {
    throw new WebhookVerificationError('webhook-timestamp is not a number of seconds');
  }
  if (Math.abs(nowSeconds - Number(timestamp)) > tolerance) {
    throw new WebhookVerificationError('webhook-timestamp is outside the tolerance');
  }
  const signed = Buffer.concat([
    Buffer.from(`${id}.${timestamp}.`),
    typeof body === 'string' ? Buffer.from(body, 'utf8') : body,
  ]);
  // Several signatures may be sent (during a key rotation): any valid one of our kind is enough.
  const entries = signatures.split(' ').map((entry) => entry.split(',', 2));
  if (secret.startsWith('whpk_')) {
    const raw = Buffer.from(secret.slice('whpk_'.length), 'base64');
    const key = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') },
      format: 'jwk',
    });
    for (const [version, signature] of entries) {
      if (version !== 'v1a' || !signature) continue;
      if (verify(null, signed, key, Buffer.from(signature, 'base64'))) return true;
    }
    throw new WebhookVerificationError('no matching signature');
  }
  const key = Buffer.from(secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret, 'base64');
  const expected = createHmac('sha256', key).update(signed).digest();
  for (const [version, signature] of entries) {
    if (version !== 'v1' || !signature) continue;
    const given = Buffer.from(signature, 'base64');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return true;
  }
  throw new WebhookVerificationError('no matching signature');
}

function header(headers, name) {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** A receiver that verifies every request and logs the outcome. */
export function startReceiver({ port = 8080, secret = process.env.WEBHOOK_SECRET } = {}) {
  if (!secret) console.warn('WEBHOOK_SECRET is not set: accepting webhooks WITHOUT verifying them');
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      try {
        if (secret) verifyWebhook(secret, req.headers, body);
        console.log(`${req.method} ${req.url} id=${req.headers['webhook-id'] ?? '-'} ` +
          `idempotency-key=${req.headers['idempotency-key'] ?? '-'} ${body.length} bytes: ok`);
        res.writeHead(204).end();
      } catch (e) {
        console.log(`${req.method} ${req.url}: rejected: ${e.message}`);
        res.writeHead(401, { 'content-type': 'text/plain' }).end(`${e.message}\n`);
      }
    });
  });
  server.listen(port, () => console.log(`receiver listening on :${port}`));
  return server;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  startReceiver({ port: Number(process.env.PORT ?? 8080) });
}
