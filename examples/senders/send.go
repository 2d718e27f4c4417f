// Sending a webhook through hookrelay with Go's net/http: go run send.go
//
// The one-line change: prefix the receiver's URL with http://127.0.0.1:7700/. A 202 means the
// webhook is stored durably; hookrelay delivers it and retries failures with backoff.
package main

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"
)

const hookrelay = "http://127.0.0.1:7700/"

func main() {
	receiverURL := "https://receiver.example.com/hooks?tenant=42"
	body := []byte(`{"type":"order.created","order_id":"ord_1"}`)

	// Before:
	//   req, err := http.NewRequest(http.MethodPost, receiverURL, bytes.NewReader(body))
	// After:
	req, err := http.NewRequest(http.MethodPost, hookrelay+receiverURL, bytes.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	// Same key, same body: hookrelay answers 200 with the original delivery instead of a duplicate.
	req.Header.Set("Idempotency-Key", "order-created-ord_1")

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		log.Fatalf("hookrelay refused the webhook: %s %s", resp.Status, answer)
	}
	fmt.Println(resp.Status, resp.Header.Get("hookrelay-delivery-id"), string(answer))
}
