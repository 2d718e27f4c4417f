#!/usr/bin/env python3
"""A webhook receiver that verifies hookrelay's Standard Webhooks signatures.

Run it (Python 3.8+, standard library only for HMAC secrets; an ed25519 public key, `whpk_`,
needs the `cryptography` package):

    WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw PORT=8080 \
        python3 examples/receivers/verify_standard_webhooks.py

and point a named endpoint at it:

    [endpoints.demo]
    url = "http://127.0.0.1:8080/hooks"
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

(`[egress] allow_cidrs = ["127.0.0.0/8"]` is needed for a receiver on loopback.) For an endpoint
whose secret is an ed25519 key (`whsk_`), give this receiver its public key instead:
WEBHOOK_SECRET=whpk_... (`hookrelay config public-keys` prints it).

`python3 verify_standard_webhooks.py --self-test` checks the verifier against the example in
the Standard Webhooks specification and exits.

What a receiver checks, in order:
1. `webhook-id`, `webhook-timestamp` and `webhook-signature` are present;
2. the timestamp is within TOLERANCE seconds of now (a replayed old request is refused);
3. one of the space-separated `v1,<base64>` signatures equals
   base64(HMAC-SHA256(key, f"{id}.{timestamp}.{raw body}")), compared in constant time,
   where key is the base64-decoded part of the secret after `whsec_`; or, with a `whpk_` public
   key, one of the `v1a,<base64>` signatures is a valid ed25519 signature of the same message;
4. then deduplicate by `webhook-id`: it is the same for every retry of one delivery.
"""

import base64
import hashlib
import hmac
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE = 5 * 60


class VerificationError(Exception):
    pass


def verify(secret, headers, body, now=None):
    """Returns the webhook id if the request is genuine and fresh; raises otherwise."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(timestamp)
    except ValueError:
        raise VerificationError("webhook-timestamp is not an integer")
    now = time.time() if now is None else now
    if abs(now - ts) > TOLERANCE:
        raise VerificationError("webhook-timestamp is too old or too new")
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    candidates = [c.partition(",") for c in signatures.split(" ")]
    if secret.startswith("whpk_"):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(secret[len("whpk_"):]))
        for version, _, sig in candidates:
            if version != "v1a":
                continue
            try:
                public.verify(base64.b64decode(sig), signed)
                return msg_id
            except (InvalidSignature, ValueError):
                continue
        raise VerificationError("no signature matches")
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for version, _, sig in candidates:
        if version == "v1" and hmac.compare_digest(sig, expected):
            return msg_id
    raise VerificationError("no signature matches")


class Handler(BaseHTTPRequestHandler):
    secret = os.environ.get("WEBHOOK_SECRET", "")
    seen = set()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            msg_id = verify(self.secret, headers, body)
        except VerificationError as e:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(str(e).encode())
            return
        if msg_id in Handler.seen:
            print(f"duplicate {msg_id}, already processed", flush=True)
        else:
            Handler.seen.add(msg_id)
            print(f"verified {msg_id}: {body[:200]!r}", flush=True)
        self.send_response(204)
        self.end_headers()

    do_PUT = do_PATCH = do_POST


def self_test():
    # The example in the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'
    assert verify(secret, headers, body, now=1614265330) == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    for bad_body, now in [(b'{"test": 1}', 1614265330), (body, 1614265330 + 3600)]:
        try:
            verify(secret, headers, bad_body, now=now)
        except VerificationError:
            continue
        raise AssertionError("a tampered or stale request was accepted")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        print("self-test passed (HMAC; ed25519 skipped: no `cryptography` package)")
        return
    # RFC 8032's first test key as `whpk_`, and hookrelay's v1a signature of the same message.
    public = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    headers["webhook-signature"] = (
        "v1,x v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw=="
    )
    assert verify(public, headers, body, now=1614265330) == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    try:
        verify(public, headers, b'{"test": 1}', now=1614265330)
    except VerificationError:
        print("self-test passed (HMAC and ed25519)")
        return
    raise AssertionError("a tampered request was accepted with an ed25519 key")


if __name__ == "__main__":
    if "--self-test" in sys.argv:
        self_test()
        sys.exit(0)
    if not Handler.secret:
        sys.exit("set WEBHOOK_SECRET=whsec_... (or whpk_... for an ed25519 key)")
    port = int(os.environ.get("PORT", "8080"))
    print(f"verifying webhooks on http://127.0.0.1:{port}", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
