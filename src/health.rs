//! Destination health: the per-host circuit breaker (a pure state machine), the set of named
//! endpoints disabled by `410 Gone`, and the snapshot of host states the admin API reads.
//!
//! The breaker only decides; the scheduler's queue applies it (an open host's deliveries wait,
//! no attempts are spent). The disabled set is persisted by the store writer; this module only
//! holds the live copy and tells the scheduler when it changes. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::classify::HostSignal;

/// The breaker's settings, from `[health]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed attempts that open the circuit.
    pub threshold: u32,
    pub probe_interval_ms: u64,
}

impl BreakerPolicy {
    /// A breaker that never opens (the queue's default in unit tests).
    pub const NEVER: BreakerPolicy = BreakerPolicy {
        threshold: u32::MAX,
        probe_interval_ms: 30_000,
    };
}

/// One host's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Attempts flow; `failures` consecutive failures so far.
    Closed { failures: u32 },
    /// Attempts are held; one probe may start at `probe_at`. `failures` goes on counting the
    /// failures in a row (the failed probes and late answers), so an operator sees how long the
    /// host has been failing, not a reset count.
    Open { probe_at: u64, failures: u32 },
    /// The probe is in flight; nothing else starts.
    HalfOpen { failures: u32 },
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit::Closed { failures: 0 }
    }
}

impl Circuit {
    /// The earliest time an attempt may start; None while a probe is in flight.
    pub fn gate(self) -> Option<u64> {
        match self {
            Circuit::Closed { .. } => Some(0),
            Circuit::Open { probe_at, .. } => Some(probe_at),
            Circuit::HalfOpen { .. } => None,
        }
    }

    /// Attempts allowed in flight at once: all of them when closed, one probe otherwise.
    pub fn limit(self, per_host: usize) -> usize {
        match self {
            Circuit::Closed { .. } => per_host,
            _ => 1,
        }
    }

    /// An attempt starts at `now`: the first one after `probe_at` is the probe.
    pub fn on_start(self, now: u64) -> Circuit {
        match self {
            Circuit::Open { probe_at, failures } if now >= probe_at => {
                Circuit::HalfOpen { failures }
            }
            s => s,
        }
    }

    /// An attempt finished at `now` with `signal`; `sent` says whether its request reached the
    /// host at all.
    pub fn on_result(self, signal: HostSignal, sent: bool, now: u64, p: BreakerPolicy) -> Circuit {
        let failed = self.failures().saturating_add(1);
        let reopen = Circuit::Open {
            probe_at: now.saturating_add(p.probe_interval_ms),
            failures: failed,
        };
        match (self, signal) {
            (_, HostSignal::Healthy) => Circuit::Closed { failures: 0 },
            (Circuit::Closed { .. }, HostSignal::Failed) => {
                if failed >= p.threshold {
                    reopen
                } else {
                    Circuit::Closed { failures: failed }
                }
            }
            (Circuit::HalfOpen { .. }, HostSignal::Failed) => reopen,
            // A probe that says nothing about the host: probe again, at once if nothing was
            // sent (our own refusal), after the interval if the host answered (a 429 without
            // `Retry-After`: probing at once would spend delivery after delivery on a host
            // that asks for fewer requests).
            (Circuit::HalfOpen { failures }, HostSignal::Neutral) => Circuit::Open {
                probe_at: if sent {
                    now.saturating_add(p.probe_interval_ms)
                } else {
                    now
                },
                failures,
            },
            // Attempts that started before the circuit opened keep it open (and count).
            (Circuit::Open { probe_at, .. }, HostSignal::Failed) => Circuit::Open {
                probe_at,
                failures: failed,
            },
            (s @ Circuit::Open { .. }, HostSignal::Neutral) => s,
            (s @ Circuit::Closed { .. }, HostSignal::Neutral) => s,
        }
    }

    /// Failed attempts in a row, whatever the state.
    pub fn failures(self) -> u32 {
        match self {
            Circuit::Closed { failures }
            | Circuit::Open { failures, .. }
            | Circuit::HalfOpen { failures } => failures,
        }
    }

    pub fn is_open(self) -> bool {
        !matches!(self, Circuit::Closed { .. })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed { .. } => "closed",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen { .. } => "half_open",
        }
    }
}

/// What the admin API shows for a host whose circuit is not plainly closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHealthView {
    pub circuit: Circuit,
    /// Until when a `Retry-After` holds the host (ms since the epoch), if it does.
    pub not_before: Option<u64>,
}

/// Hosts with an open circuit, a held `Retry-After` or recent failures, as the scheduler last
/// published them. Cheap to clone; read by the admin API.
#[derive(Clone, Default)]
pub struct HostHealth(Arc<Mutex<BTreeMap<String, HostHealthView>>>);

impl HostHealth {
    pub fn set(&self, host: &str, view: Option<HostHealthView>) {
        if let Ok(mut m) = self.0.lock() {
            match view {
                Some(v) => m.insert(host.to_string(), v),
                None => m.remove(host),
            };
        }
    }

    pub fn get(&self, host: &str) -> Option<HostHealthView> {
        self.0.lock().ok().and_then(|m| m.get(host).cloned())
    }

    pub fn snapshot(&self) -> BTreeMap<String, HostHealthView> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Forgets the hosts whose circuit is closed and whose `Retry-After` hold has passed at
    /// `now`: published with a hold that then ran out quietly (the next start clears it
    /// without a change to publish), they would otherwise be kept for ever.
    pub fn forget_passed(&self, now: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|_, v| v.circuit.is_open() || v.not_before.is_some_and(|t| t > now));
        }
    }
}

/// The named endpoints disabled by a `410 Gone`. Their deliveries are held until an operator
/// enables them again. The scheduler subscribes to changes.
#[derive(Clone)]
pub struct EndpointGate {
    disabled_tx: Arc<watch::Sender<BTreeSet<String>>>,
    /// Held across storing a change and applying it here (see [`EndpointGate::store_and_set`]).
    changes: Arc<tokio::sync::Mutex<()>>,
}

impl EndpointGate {
    /// Starts from the set the store persisted.
    pub fn new(disabled: BTreeSet<String>) -> EndpointGate {
        EndpointGate {
            disabled_tx: Arc::new(watch::channel(disabled).0),
            changes: Arc::default(),
        }
    }

    pub fn is_disabled(&self, name: &str) -> bool {
        self.disabled_tx.borrow().contains(name)
    }

    pub fn disabled(&self) -> BTreeSet<String> {
        self.disabled_tx.borrow().clone()
    }

    /// Runs `store` (which persists the change) and applies it here, one change at a time: a
    /// 410's disabling and an operator's enabling that race end with this copy as the store
    /// has it (the last one stored wins in both). A disabling is applied before it is stored
    /// (and undone if storing fails), so no other attempt goes to an endpoint that has just
    /// said it is gone while the change is written; an enabling after. Returns whether this
    /// copy changed.
    pub async fn store_and_set<E>(
        &self,
        name: &str,
        disabled: bool,
        store: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<bool, E> {
        let _one_at_a_time = self.changes.lock().await;
        if disabled {
            let changed = self.set(name, true);
            if let Err(e) = store.await {
                if changed {
                    self.set(name, false);
                }
                return Err(e);
            }
            return Ok(changed);
        }
        store.await?;
        Ok(self.set(name, false))
    }

    /// Returns whether it changed.
    pub fn set(&self, name: &str, disabled: bool) -> bool {
        self.disabled_tx.send_if_modified(|set| {
            if disabled {
                set.insert(name.to_string())
            } else {
                set.remove(name)
            }
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<String>> {
        self.disabled_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostSignal::*;

    const P: BreakerPolicy = BreakerPolicy {
        threshold: 3,
        probe_interval_ms: 100,
    };

    #[test]
    fn breaker_table() {
        let closed = |failures| Circuit::Closed { failures };
        let open = |probe_at, failures| Circuit::Open { probe_at, failures };
        let probing = |failures| Circuit::HalfOpen { failures };
        // (state, signal, sent, now, next state)
        let cases = [
            (closed(0), Failed, true, 10, closed(1)),
            (closed(1), Failed, true, 10, closed(2)),
            (closed(2), Failed, true, 10, open(110, 3)),
            (closed(2), Healthy, true, 10, closed(0)),
            (closed(2), Neutral, true, 10, closed(2)),
            (probing(3), Failed, true, 500, open(600, 4)),
            (probing(7), Healthy, true, 500, closed(0)),
            // A probe the host answered with a 429: the next one after the interval.
            (probing(3), Neutral, true, 500, open(600, 3)),
            // A probe refused before sending: the next one at once.
            (probing(3), Neutral, false, 500, open(500, 3)),
            (open(600, 3), Failed, true, 520, open(600, 4)),
            (open(600, 3), Neutral, true, 520, open(600, 3)),
            (open(600, 3), Healthy, true, 520, closed(0)),
        ];
        for (state, signal, sent, now, want) in cases {
            assert_eq!(
                state.on_result(signal, sent, now, P),
                want,
                "{state:?} + {signal:?} (sent: {sent})"
            );
        }
    }

    #[test]
    fn open_circuit_lets_one_probe_through_at_its_time() {
        let s = Circuit::Open {
            probe_at: 100,
            failures: 5,
        };
        assert_eq!(s.gate(), Some(100));
        assert_eq!(s.limit(8), 1);
        assert_eq!(s.on_start(99), s);
        let probing = s.on_start(100);
        assert_eq!(probing, Circuit::HalfOpen { failures: 5 });
        assert_eq!(probing.gate(), None);
        assert_eq!(Circuit::default().gate(), Some(0));
        assert_eq!(Circuit::default().limit(8), 8);
    }

    #[test]
    fn gate_changes_are_seen_by_subscribers() {
        let gate = EndpointGate::new(BTreeSet::from(["a".to_string()]));
        let mut rx = gate.subscribe();
        assert!(gate.is_disabled("a"));
        assert!(!gate.set("a", true));
        assert!(gate.set("a", false));
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().is_empty());
        assert!(!gate.is_disabled("a"));
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    #[test]
    fn passed_holds_on_closed_circuits_are_forgotten() {
        let health = HostHealth::default();
        let view = |circuit, not_before| {
            Some(HostHealthView {
                circuit,
                not_before,
            })
        };
        health.set("held:80", view(Circuit::default(), Some(100)));
        health.set(
            "open:80",
            view(
                Circuit::Open {
                    probe_at: 5,
                    failures: 10,
                },
                Some(10),
            ),
        );
        health.set("passed:80", view(Circuit::default(), Some(10)));
        health.forget_passed(50);
        let kept: Vec<String> = health.snapshot().into_keys().collect();
        assert_eq!(kept, ["held:80", "open:80"]);
        health.forget_passed(100);
        assert_eq!(health.snapshot().len(), 1);
    }

    #[tokio::test]
    async fn racing_changes_leave_the_gate_as_the_store_has_it() {
        let gate = EndpointGate::new(BTreeSet::new());
        let stored = Arc::new(Mutex::new(Vec::new()));
        // A 410's disabling is stored, then its task is slow to apply it; an operator's
        // enabling comes in between.
        let (g, log) = (gate.clone(), stored.clone());
        let slow = tokio::spawn(async move {
            g.store_and_set("orders", true, async {
                log.lock().unwrap().push(true);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Ok::<(), ()>(())
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let log = stored.clone();
        gate.store_and_set("orders", false, async {
            log.lock().unwrap().push(false);
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
        slow.await.unwrap().unwrap();
        let last_stored = *stored.lock().unwrap().last().unwrap();
        assert_eq!(gate.is_disabled("orders"), last_stored);
        // A failed store applies nothing in the end.
        assert_eq!(
            gate.store_and_set("x", true, async { Err::<(), _>("full") })
                .await,
            Err("full")
        );
        assert!(!gate.is_disabled("x"));
        // A disabling holds the endpoint while it is being stored; an enabling only once stored.
        let g = gate.clone();
        gate.store_and_set("y", true, async move {
            assert!(g.is_disabled("y"), "disabled while being stored");
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
        let g = gate.clone();
        gate.store_and_set("y", false, async move {
            assert!(g.is_disabled("y"), "enabled before it was stored");
            Ok::<(), ()>(())
        })
        .await
        .unwrap();
        assert!(!gate.is_disabled("y"));
    }
}
