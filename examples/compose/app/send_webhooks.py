"""An example app: sends an order webhook through hookrelay every two seconds.

It uses only the standard library. Each webhook goes to hookrelay's named endpoint
(HOOKRELAY_URL, e.g. http://hookrelay:7700/e/orders), which knows the receiver's URL and signs
the delivery; without an endpoint, set HOOKRELAY_URL to the ingest root and RECEIVER_URL to the
receiver, and the URL-prefix form (unsigned) is used. A 202 means the webhook is on disk and will
be delivered.
"""

import json
import os
import time
import urllib.error
import urllib.request

HOOKRELAY_URL = os.environ.get("HOOKRELAY_URL", "http://127.0.0.1:7700/e/orders")
RECEIVER_URL = os.environ.get("RECEIVER_URL", "")


def send(order_id: int) -> None:
    body = json.dumps({"type": "order.created", "order_id": f"ord_{order_id}"}).encode()
    request = urllib.request.Request(
        HOOKRELAY_URL + RECEIVER_URL,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": f"order-created-{order_id}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.status, response.headers.get("hookrelay-delivery-id"), flush=True)
    except urllib.error.HTTPError as e:
        # 503 shutting_down / store_unavailable carry Retry-After: a real app would retry.
        print("refused:", e.code, e.read().decode(errors="replace"), flush=True)
    except OSError as e:
        print("hookrelay unreachable:", e, flush=True)


if __name__ == "__main__":
    order_id = int(time.time())
    while True:
        send(order_id)
        order_id += 1
        time.sleep(2)
