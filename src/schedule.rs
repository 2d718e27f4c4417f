//! The scheduler: which pending delivery is attempted next, and when.
//!
//! It owns an in-memory mirror of the store's `due` index, grouped by destination host
//! ([`Queue`]), loaded from the store before the writer starts and fed after every commit. It
//! sleeps until the earliest eligible delivery or a message (new work, a finished attempt, an
//! operator's [`Control`]), never on a polling tick. It never writes the store itself: attempts
//! go through `deliver`, and pauses are stored by the admin before they are sent here.
//!
//! A pause (global or per host) only stops new attempts from starting; attempts in flight
//! finish. A paused host is simply absent from the queue's `ready` set.
//!
//! Per host it also applies the concurrency limit, a `Retry-After` hold and the circuit breaker
//! (`health::Circuit`); deliveries of endpoints disabled by a 410 are parked until enabled.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::clock;
use crate::deliver::{AttemptResult, Deliverer, HostReport, SlotRelease};
use crate::health::{BreakerPolicy, Circuit, EndpointGate, HostHealth, HostHealthView};
use crate::metrics::Metrics;
use crate::model::{Classification, DeliveryId, Id};
use crate::pace::{Rate, RateLimits};
use crate::panics;
use crate::store::writer::Enqueued;

type Host = Arc<str>;

/// A host's pending deliveries, (next_attempt_at, id) earliest first, in two sets: new ones
/// (never attempted yet) and retries. When both have work due they take turns, so a run of
/// failing retries (a broken path, a payload the receiver refuses), due together ahead of
/// everything newer, neither holds back new webhooks to the host nor trips its breaker by
/// failing back to back.
#[derive(Debug, Default)]
struct Pending {
    fresh: BTreeSet<(u64, Id)>,
    retries: BTreeSet<(u64, Id)>,
    /// Whose turn it is when both have work due.
    retry_turn: bool,
}

impl Pending {
    /// New while it is due no later than it was created (its id's time): a retry is due
    /// after an attempt.
    fn set_for(&mut self, next_at: u64, id: Id) -> &mut BTreeSet<(u64, Id)> {
        if next_at <= id.ms() {
            &mut self.fresh
        } else {
            &mut self.retries
        }
    }

    fn insert(&mut self, entry: (u64, Id)) -> bool {
        self.set_for(entry.0, entry.1).insert(entry)
    }

    fn remove(&mut self, entry: &(u64, Id)) -> bool {
        self.fresh.remove(entry) || self.retries.remove(entry)
    }

    /// The earliest due of either set.
    fn first(&self) -> Option<(u64, Id)> {
        match (self.fresh.first(), self.retries.first()) {
            (Some(f), Some(r)) => Some(*f.min(r)),
            (f, r) => f.or(r).copied(),
        }
    }

    fn len(&self) -> usize {
        self.fresh.len() + self.retries.len()
    }

    /// Moves every entry `back` ms earlier, each staying in its set (the order within a set is
    /// kept, so each is rebuilt from a sorted run).
    fn shift_back(&mut self, back: u64) {
        let shift = |set: &BTreeSet<(u64, Id)>| -> BTreeSet<(u64, Id)> {
            set.iter()
                .map(|&(at, id)| (at.saturating_sub(back), id))
                .collect()
        };
        self.fresh = shift(&self.fresh);
        self.retries = shift(&self.retries);
    }

    fn is_empty(&self) -> bool {
        self.fresh.is_empty() && self.retries.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, Id)> {
        self.fresh.iter().chain(self.retries.iter())
    }

    /// The entries due after `now`.
    fn due_after(&self, now: u64) -> Vec<(u64, Id)> {
        let from = (now.saturating_add(1), Id(0));
        self.fresh
            .range(from..)
            .chain(self.retries.range(from..))
            .copied()
            .collect()
    }

    /// The next delivery to attempt at `now`: the earliest due, new ones and retries taking
    /// turns while both have work due.
    fn pop(&mut self, now: u64) -> Option<(u64, Id)> {
        let due = |set: &BTreeSet<(u64, Id)>| set.first().is_some_and(|(at, _)| *at <= now);
        let retry = match (due(&self.fresh), due(&self.retries)) {
            (true, true) => {
                self.retry_turn = !self.retry_turn;
                !self.retry_turn
            }
            (false, true) => true,
            (true, false) => false,
            // Nothing due (the caller asks only when something is): the earliest.
            (false, false) => {
                let first = self.first()?;
                self.remove(&first);
                return Some(first);
            }
        };
        if retry {
            self.retries.pop_first()
        } else {
            self.fresh.pop_first()
        }
    }

    /// What an open circuit's probe sends at `now`: the newest new delivery due (new ones are
    /// due when they were created, so the last due is the newest), or, with none due, the retry
    /// due last. Retries that keep failing for reasons of their own (a broken path, a refused
    /// payload) are due first and say less about the host than its newest traffic; a probe
    /// that chose them would keep the circuit open while the host serves everything else.
    /// O(log n): probes can follow one another at once (a probe that says nothing about the
    /// host is followed by another), so this must not scan a large backlog.
    fn pop_probe(&mut self, now: u64) -> Option<(u64, Id)> {
        let upto = (now, Id(u128::MAX));
        let chosen = self
            .fresh
            .range(..=upto)
            .next_back()
            .or_else(|| self.retries.range(..=upto).next_back())
            .copied()?;
        self.remove(&chosen);
        Some(chosen)
    }
}

/// One destination host's pending work.
#[derive(Debug, Default)]
struct HostQueue {
    pending: Pending,
    /// Attempts whose request the host is serving: what the per-host limit bounds.
    in_flight: usize,
    /// Attempts the host has answered that wait for their record to be committed. They hold
    /// no slot, but keep the host (and its breaker state) known until they are requeued.
    recording: usize,
    /// The host's entry in `Queue::ready` (eligible time, `last_start_seq`), if it has one.
    slot: Option<(u64, u64)>,
    /// A `Retry-After` from this host holds all of its deliveries until then.
    not_before: u64,
    circuit: Circuit,
    /// Its rate limit, looked up once when the host is first queued.
    rate: Option<Rate>,
    /// When its last attempt started: a host is ready no earlier than that, so hosts with
    /// work due take turns instead of the one with the oldest backlog taking every slot.
    last_start: u64,
    /// `Queue::starts` at its last start: among hosts ready at the same time, the one that
    /// started least recently goes first.
    last_start_seq: u64,
}

impl HostQueue {
    /// Takes `id` out of the pending set: at `next_at` where the store last had it, or
    /// wherever a retry has moved it since. When it was due; `None` if it is not pending here.
    fn take_pending(&mut self, next_at: u64, id: Id) -> Option<u64> {
        if self.pending.remove(&(next_at, id)) {
            return Some(next_at);
        }
        let moved = self.pending.iter().find(|(_, i)| *i == id).copied()?;
        self.pending.remove(&moved);
        Some(moved.0)
    }
}

/// Pending deliveries by host, and the hosts ready to send, by the time they become eligible
/// (for hosts with work due: the least recently started first, so no host's backlog starves
/// another's).
/// Pure data: every method takes `now` as a value.
#[derive(Debug)]
pub struct Queue {
    hosts: HashMap<Host, HostQueue>,
    /// (eligible_at, last_start_seq, host) for each host with pending work and a free per-host
    /// slot.
    ready: BTreeSet<(u64, u64, Host)>,
    /// Attempts started so far (the sequence behind `HostQueue::last_start_seq`).
    starts: u64,
    /// The latest `now` `pop_due` was given: an earlier one means the clock stepped back.
    latest_now: u64,
    per_host_limit: usize,
    pending: usize,
    breaker: BreakerPolicy,
    /// Hosts an operator paused: their work stays queued but never becomes ready.
    paused_hosts: HashSet<Host>,
    rates: RateLimits,
    /// Each rate-limited host's theoretical arrival time (see `pace.rs`), in microseconds. Kept
    /// apart from `hosts`, which forgets an idle host, so that a host cannot start a fresh
    /// burst by going idle; entries in the past are swept (see `sweep_paced`).
    paced: HashMap<Host, u64>,
    /// `paced.len()` after its last sweep.
    paced_swept: usize,
    /// Hosts whose holds a clock step moved, for the admin's health view (`take_restated`).
    restated: Vec<Host>,
    /// How far the clock stepped back since `take_step` was last called, for the times kept
    /// outside the queue (held and withdrawn deliveries).
    stepped_back: u64,
}

/// One host's load, as `GET /v1/hosts` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostLoad {
    pub host: String,
    /// Pending deliveries, those held for a disabled endpoint included.
    pub pending: usize,
    /// Of `pending`, the deliveries held because their endpoint was disabled by a 410.
    pub held_for_disabled_endpoint: usize,
    pub in_flight: usize,
    pub paused: bool,
    /// When its earliest queued delivery is due (held ones are not queued: a host with only
    /// held deliveries has none).
    pub next_at: Option<u64>,
    /// Its circuit breaker.
    pub circuit: Circuit,
    /// Until when a `Retry-After` holds it, if one does.
    pub retry_after_until: Option<u64>,
    /// Its rate limit (`delivery.per_host_rate`, `delivery.host_rates`), if it has one.
    pub rate_limit: Option<Rate>,
}

impl Queue {
    pub fn new(per_host_limit: usize) -> Queue {
        Queue {
            hosts: HashMap::new(),
            ready: BTreeSet::new(),
            starts: 0,
            latest_now: 0,
            per_host_limit: per_host_limit.max(1),
            pending: 0,
            breaker: BreakerPolicy::NEVER,
            paused_hosts: HashSet::new(),
            rates: RateLimits::default(),
            paced: HashMap::new(),
            paced_swept: 0,
            restated: Vec::new(),
            stepped_back: 0,
        }
    }

    /// Paces hosts to their rate limits.
    pub fn with_rates(mut self, rates: RateLimits) -> Queue {
        self.rates = rates;
        self
    }

    /// Pauses or resumes one host; its queued work stays and resumes where it was.
    pub fn set_host_paused(&mut self, host: &str, paused: bool) {
        let key = self.host_key(host);
        if paused {
            self.paused_hosts.insert(key.clone());
        } else {
            self.paused_hosts.remove(&key);
        }
        self.refresh(&key);
    }

    /// An operator's "retry now" for a host whose receiver is back: every pending delivery
    /// due later is due at `now`, and the host's `Retry-After` hold and open circuit are
    /// cleared (a probe in flight still decides as usual; a pause and a rate limit still
    /// hold). How many deliveries are queued for it (all due now), how many of them were due
    /// later, and the host's view; `None` if nothing is queued for it.
    pub fn retry_host_now(
        &mut self,
        host: &str,
        now: u64,
    ) -> Option<(usize, usize, HostHealthView)> {
        let key = self.host_key(host);
        let hq = self.hosts.get_mut(&key)?;
        let later = hq.pending.due_after(now);
        for entry in &later {
            hq.pending.remove(entry);
            hq.pending.insert((now, entry.1));
        }
        hq.not_before = 0;
        if let Circuit::Open { .. } = hq.circuit {
            hq.circuit = Circuit::default();
        }
        let (queued, shown) = (hq.pending.len(), view(hq));
        self.refresh(&key);
        Some((queued, later.len(), shown))
    }

    /// An operator's "retry now" for one queued delivery: due at `now` if it was due later
    /// (its host's holds still apply). When it was due; `None` if it is not queued.
    pub fn retry_now(&mut self, host: &str, next_at: u64, id: Id, now: u64) -> Option<u64> {
        let key = self.host_key(host);
        let hq = self.hosts.get_mut(&key)?;
        // Moved within the host's set: taking it out first could forget the host, and with it
        // its breaker's count of failures.
        let at = hq.take_pending(next_at, id)?;
        hq.pending.insert((at.min(now), id));
        self.refresh(&key);
        Some(at)
    }

    /// Drops a pending delivery (an operator cancels it): when it was due, if it was queued.
    /// `next_at` is where the store last had it; if a retry moved it since, the host's set is
    /// searched.
    pub fn remove(&mut self, host: &str, next_at: u64, id: Id) -> Option<u64> {
        let key = self.host_key(host);
        let removed = self
            .hosts
            .get_mut(&key)
            .and_then(|hq| hq.take_pending(next_at, id));
        if removed.is_some() {
            self.pending -= 1;
            self.refresh(&key);
        }
        removed
    }

    /// Every host with pending or in-flight work, an open circuit or a `Retry-After` hold still
    /// in force at `now`, and every paused host, sorted by name. A hold that has passed is not
    /// shown (an idle host keeps its entry until its next attempt or the sweep, `forget_idle`;
    /// reading does not change it).
    pub fn hosts(&self, now: u64) -> Vec<HostLoad> {
        let mut out: Vec<HostLoad> = self
            .hosts
            .iter()
            .filter(|(h, hq)| {
                !hq.pending.is_empty()
                    || hq.in_flight + hq.recording > 0
                    || hq.circuit.is_open()
                    || hq.not_before > now
                    || self.paused_hosts.contains(*h)
            })
            .map(|(h, hq)| HostLoad {
                host: h.to_string(),
                pending: hq.pending.len(),
                held_for_disabled_endpoint: 0,
                // In progress as the store shows it: answered attempts still being recorded too.
                in_flight: hq.in_flight + hq.recording,
                paused: self.paused_hosts.contains(h),
                next_at: hq.pending.first().map(|(at, _)| at),
                circuit: hq.circuit,
                retry_after_until: (hq.not_before > now).then_some(hq.not_before),
                rate_limit: hq.rate,
            })
            .collect();
        for h in &self.paused_hosts {
            if !self.hosts.contains_key(h) {
                out.push(HostLoad {
                    host: h.to_string(),
                    pending: 0,
                    held_for_disabled_endpoint: 0,
                    in_flight: 0,
                    paused: true,
                    next_at: None,
                    circuit: Circuit::default(),
                    retry_after_until: None,
                    rate_limit: self.rates.for_host(h),
                });
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// Applies a circuit breaker per host.
    pub fn with_breaker(mut self, breaker: BreakerPolicy) -> Queue {
        self.breaker = breaker;
        self
    }

    /// The host is done with an attempt taken by [`Queue::pop_due`]: its slot is free, and what
    /// the exchange said feeds the host's breaker and `Retry-After` hold. The attempt stays
    /// the host's until [`Queue::finish`]. Returns the host's health when it changed, for the
    /// admin view.
    pub fn release(&mut self, host: &str, report: HostReport, now: u64) -> Option<HostHealthView> {
        let paced_at = self.paced_at(host);
        self.release_paced(host, report, now, paced_at)
    }

    /// The host's pace (its theoretical arrival time, see `pace.rs`) as it stands, if it is
    /// paced: read right after `pop_due`, it is what that start left.
    pub fn paced_at(&self, host: &str) -> Option<u64> {
        self.paced.get(host).copied()
    }

    /// As [`Queue::release`]. An attempt that sent nothing gives its place in the host's rate
    /// back, but only if no later start has taken the following place (`paced_at`, the pace its
    /// own start left, is still the host's): giving it back then would let the next start
    /// come closer than the rate allows after that later one.
    pub fn release_paced(
        &mut self,
        host: &str,
        report: HostReport,
        now: u64,
        paced_at: Option<u64>,
    ) -> Option<HostHealthView> {
        self.observe(now);
        let breaker = self.breaker;
        let hq = self.hosts.get_mut(host)?;
        debug_assert!(
            hq.in_flight > 0,
            "{host}: a release without an attempt in flight"
        );
        hq.in_flight = hq.in_flight.saturating_sub(1);
        hq.recording += 1;
        if let (false, Some(rate)) = (report.sent, hq.rate)
            && let Some(tat) = self.paced.get_mut(host)
            && Some(*tat) == paced_at
        {
            *tat = rate.refund(*tat);
        }
        let before = (hq.circuit, hq.not_before);
        hq.circuit = hq
            .circuit
            .on_result(report.signal, report.sent, now, breaker);
        if let Some(until) = report.hold_host_until {
            hq.not_before = hq.not_before.max(until);
        }
        let changed = (before != (hq.circuit, hq.not_before)).then(|| view(hq));
        let key = self.host_key(host);
        self.refresh(&key);
        changed
    }

    /// The host's breaker state, if the queue knows the host.
    pub fn circuit(&self, host: &str) -> Option<Circuit> {
        self.hosts.get(host).map(|hq| hq.circuit)
    }

    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn push(&mut self, host: &str, next_at: u64, id: Id) {
        let key = self.host_key(host);
        if !self.hosts.contains_key(&key) {
            let rate = self.rates.for_host(&key);
            self.hosts.insert(
                key.clone(),
                HostQueue {
                    rate,
                    ..HostQueue::default()
                },
            );
        }
        let Some(hq) = self.hosts.get_mut(&key) else {
            return;
        };
        if hq.pending.insert((next_at, id)) {
            self.pending += 1;
        }
        self.refresh(&key);
    }

    /// Notes the clock's `now`; an earlier one than before means it stepped back. Called by
    /// every entry point that sets or reads a hold (starts and releases), so a hold set after
    /// a step is never shifted again, and by the scheduler before it handles each event, so a
    /// time computed on the new clock is not shifted either.
    pub fn observe(&mut self, now: u64) {
        if now < self.latest_now {
            self.clock_stepped_back(now);
        }
        self.latest_now = now;
    }

    /// Takes the next delivery that is due at `now`, marking it in flight.
    pub fn pop_due(&mut self, now: u64) -> Option<(Id, Host)> {
        self.observe(now);
        let (at, _, host) = self.ready.first()?.clone();
        if at > now {
            return None;
        }
        let hq = self.hosts.get_mut(&host)?;
        // The first start after an open circuit's probe time is its probe.
        let probe = matches!(hq.circuit, Circuit::Open { probe_at, .. } if now >= probe_at);
        let (_, id) = if probe {
            hq.pending.pop_probe(now)?
        } else {
            hq.pending.pop(now)?
        };
        hq.in_flight += 1;
        hq.last_start = now;
        self.starts += 1;
        hq.last_start_seq = self.starts;
        hq.circuit = hq.circuit.on_start(now);
        if hq.not_before <= now {
            hq.not_before = 0;
        }
        if let Some(rate) = hq.rate {
            let tat = self.paced.entry(host.clone()).or_default();
            *tat = rate.after_start(*tat, now);
            self.sweep_paced(now);
        }
        self.pending -= 1;
        self.refresh(&host);
        Some((id, host))
    }

    /// After the clock stepped back to `now`: a host's last start is no later than `now` again,
    /// or work due now would wait for the clock to catch up with it (turn-taking only orders
    /// hosts, it never delays work that is due). Everything queued moves back by the step:
    /// what was due is still due (a backlog, deliveries held by a pause, a circuit or a
    /// `Retry-After`), and a retry keeps the backoff it had left instead of waiting for the
    /// clock to come back to its date. The holds kept only here (a rate limit's pace, a
    /// `Retry-After` hold, an open circuit's probe time) likewise keep the time they had left.
    /// Only the queue's times change: the store keeps the dates, and each attempt writes its
    /// next one on the new clock (as when a restart brings a retry forward to `max_delay`).
    fn clock_stepped_back(&mut self, now: u64) {
        let back = self.latest_now.saturating_sub(now);
        self.stepped_back = self.stepped_back.saturating_add(back);
        for (host, hq) in self.hosts.iter_mut() {
            hq.last_start = hq.last_start.min(now);
            hq.pending.shift_back(back);
            let mut moved = false;
            if hq.not_before > now {
                hq.not_before = hq.not_before.saturating_sub(back);
                moved = true;
            }
            if let Circuit::Open { probe_at, failures } = hq.circuit {
                hq.circuit = Circuit::Open {
                    probe_at: probe_at.saturating_sub(back),
                    failures,
                };
                moved = true;
            }
            if moved {
                self.restated.push(host.clone());
            }
        }
        let back_us = back.saturating_mul(1_000);
        for tat in self.paced.values_mut() {
            *tat = tat.saturating_sub(back_us);
        }
        let hosts: Vec<Host> = self.hosts.keys().cloned().collect();
        for host in hosts {
            self.refresh(&host);
        }
    }

    /// How far the clock stepped back since the last call (0 if it did not).
    pub fn take_step(&mut self) -> u64 {
        std::mem::take(&mut self.stepped_back)
    }

    /// The hosts whose holds moved since the last call (the clock stepped back), with their
    /// views as they are when this is called (an event handled since may have changed them
    /// again), so the admin's health view shows the times the queue keeps. A host forgotten
    /// since is left out.
    pub fn take_restated(&mut self) -> Vec<(Host, HostHealthView)> {
        std::mem::take(&mut self.restated)
            .into_iter()
            .filter_map(|host| {
                let view = view(self.hosts.get(&host)?);
                Some((host, view))
            })
            .collect()
    }

    /// Forgets the pacing of hosts that are no longer queued and whose pace has caught up with
    /// `now`, once the map has doubled since the last sweep (so sweeping costs O(1) a start).
    fn sweep_paced(&mut self, now: u64) {
        if self.paced.len() <= (2 * self.paced_swept).max(64) {
            return;
        }
        let now_us = now.saturating_mul(1_000);
        let hosts = &self.hosts;
        self.paced
            .retain(|host, tat| *tat > now_us || hosts.contains_key(host));
        self.paced_swept = self.paced.len();
    }

    /// A released attempt is recorded; `next_at` is set when the delivery stays pending here.
    pub fn finish(&mut self, host: &str, id: Id, next_at: Option<u64>) {
        let key = self.host_key(host);
        if let Some(hq) = self.hosts.get_mut(&key) {
            debug_assert!(hq.recording > 0, "{host}: a finish without a release");
            hq.recording = hq.recording.saturating_sub(1);
        }
        match next_at {
            Some(at) => self.push(&key, at, id),
            None => self.refresh(&key),
        }
    }

    /// Forgets the hosts with no work left whose holds have passed at `now`: a `Retry-After`
    /// that has run out, or an open circuit whose probe time has come with nothing to probe
    /// (the next delivery to the host starts it afresh). Without this, a host the app stopped
    /// sending to would be kept, and shown with an open circuit, for ever. Returns them.
    pub fn forget_idle(&mut self, now: u64) -> Vec<Host> {
        let paused = &self.paused_hosts;
        let mut forgotten = Vec::new();
        self.hosts.retain(|host, hq| {
            let idle = hq.pending.is_empty() && hq.in_flight == 0 && hq.recording == 0;
            let passed = hq.not_before <= now
                && match hq.circuit {
                    Circuit::Closed { .. } => true,
                    Circuit::Open { probe_at, .. } => probe_at <= now,
                    Circuit::HalfOpen { .. } => false,
                };
            let forget = idle && passed && !paused.contains(host);
            if forget {
                forgotten.push(host.clone());
            }
            !forget
        });
        forgotten
    }

    /// Whether any host is known (so a sweep may have something to forget).
    fn knows_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// When the earliest host becomes eligible.
    pub fn next_wake(&self) -> Option<u64> {
        self.ready.first().map(|(at, _, _)| *at)
    }

    /// Reuses the map's `Arc<str>` so each host name is allocated once.
    fn host_key(&self, host: &str) -> Host {
        self.hosts
            .get_key_value(host)
            .map(|(k, _)| k.clone())
            .or_else(|| self.paused_hosts.get(host).cloned())
            .unwrap_or_else(|| Arc::from(host))
    }

    /// Recomputes the host's place in `ready`; forgets idle hosts so memory follows the backlog.
    fn refresh(&mut self, host: &Host) {
        let paced = self.paced.get(host).copied().unwrap_or(0);
        let Some(hq) = self.hosts.get_mut(host) else {
            return;
        };
        if let Some((old, seq)) = hq.slot.take() {
            self.ready.remove(&(old, seq, host.clone()));
        }
        let gate = hq.circuit.gate();
        let eligible = hq.in_flight < hq.circuit.limit(self.per_host_limit)
            && gate.is_some()
            && !self.paused_hosts.contains(host);
        if let (true, Some((at, _))) = (eligible, hq.pending.first()) {
            let pace = hq.rate.map_or(0, |r| r.eligible_at_ms(paced));
            // Never later than `now` for work that is due (`last_start` is in the past), so
            // only the order of the hosts that may start changes: the ones that started
            // least recently first.
            let at = at
                .max(hq.not_before)
                .max(gate.unwrap_or(0))
                .max(pace)
                .max(hq.last_start);
            hq.slot = Some((at, hq.last_start_seq));
            self.ready.insert((at, hq.last_start_seq, host.clone()));
        } else if hq.pending.is_empty()
            && hq.in_flight == 0
            && hq.recording == 0
            && !hq.circuit.is_open()
            && hq.not_before == 0
        {
            // An open circuit or a Retry-After hold outlives the backlog: new work must wait too.
            self.hosts.remove(host);
        }
    }
}

fn view(hq: &HostQueue) -> HostHealthView {
    HostHealthView {
        circuit: hq.circuit,
        not_before: (hq.not_before > 0).then_some(hq.not_before),
    }
}

/// The ids of attempts in flight, readable by the admin API (an in-flight delivery shows as
/// `in_progress`; that state is never stored).
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<Id>>>);

impl InFlight {
    pub fn contains(&self, id: Id) -> bool {
        self.0.lock().map(|s| s.contains(&id)).unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, id: Id) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(id);
        }
    }

    fn remove(&self, id: Id) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&id);
        }
    }
}

/// How many deliveries are pending, in flight or held, as the scheduler last counted; ingest
/// reads it to refuse work over `store.max_pending`.
#[derive(Clone, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, n: usize) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// What an attempt's task reports, in this order: the host is done with it (`Released`,
/// exactly once, see [`SlotRelease`]), then it is recorded (`Recorded`), or the task ended
/// without a result (`Abandoned`: a panic, see [`spawn_attempt`]). An abandoned attempt is then
/// recorded as an `INTERNAL_ERROR` attempt by a task of its own, which reports `Recorded`, or
/// `Unrecorded` if it too ends without a result.
enum Finished {
    /// `paced_at` is the host's pace as this attempt's start left it (see `Queue::release`).
    Released {
        host: Host,
        report: HostReport,
        paced_at: Option<u64>,
    },
    Recorded {
        id: Id,
        host: Host,
        result: AttemptResult,
    },
    /// `panic` is the panic's message, when the task panicked (rather than being dropped).
    Abandoned {
        id: Id,
        host: Host,
        panic: Option<String>,
    },
    Unrecorded {
        id: Id,
        host: Host,
        panic: Option<String>,
    },
}

/// An operator's instruction, sent by the admin after the change is stored.
#[derive(Debug)]
pub enum Control {
    /// Global pause (true) or resume (false).
    Pause(bool),
    HostPause {
        host: String,
        paused: bool,
    },
    /// Take a pending delivery out of the queue before it is cancelled in the store. Answers
    /// false, and changes nothing, when an attempt is in flight (cancel is then refused).
    Withdraw {
        host: String,
        next_at: u64,
        id: Id,
        reply: oneshot::Sender<bool>,
    },
    /// Put back a withdrawn delivery whose cancel could not be stored.
    Requeue {
        host: String,
        next_at: u64,
        id: Id,
    },
    /// A withdrawn delivery's cancel was stored (or found nothing left to cancel): forget it.
    Cancelled(Id),
    /// Answered once every message sent before it has been taken (they are taken in order).
    Applied(oneshot::Sender<()>),
    /// An operator's "retry now": a host's pending deliveries (`delivery: None`, which also
    /// clears the host's holds), or one delivery, stored at `(next_at, id)`.
    RetryNow {
        host: String,
        delivery: Option<(u64, Id)>,
        reply: oneshot::Sender<RetryNow>,
    },
    /// Report every host's load.
    Hosts(oneshot::Sender<Vec<HostLoad>>),
}

/// What an operator's "retry now" did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryNow {
    /// Done: `due_now` deliveries are due now (for a host: all of its queued ones), of which
    /// `brought_forward` were due later.
    Done {
        due_now: usize,
        brought_forward: usize,
    },
    /// The delivery has an attempt in flight.
    InFlight,
    /// The delivery is held for its disabled endpoint.
    Parked,
    /// The delivery is being cancelled.
    Withdrawn,
    /// The delivery is not queued: finished since it was read, or not announced yet.
    NotQueued,
}

/// A delivery held for a disabled endpoint: (host, next_at, id).
type Held = (Host, u64, Id);

/// Deliveries of endpoints disabled by a 410, by endpoint: (host, next_at, id). They stay
/// pending in the store and leave the queue until the endpoint is enabled.
#[derive(Default)]
pub struct Parked {
    by_endpoint: HashMap<String, Vec<Held>>,
}

impl Parked {
    fn park(&mut self, endpoint: String, host: Host, at: u64, id: Id) {
        self.by_endpoint
            .entry(endpoint)
            .or_default()
            .push((host, at, id));
    }

    /// How many deliveries are held (a sum over the few disabled endpoints).
    fn len(&self) -> usize {
        self.by_endpoint.values().map(Vec::len).sum()
    }

    /// Forgets a held delivery (cancelled by an operator): when it was due, if it was held.
    fn remove(&mut self, id: Id) -> Option<u64> {
        let found = self.by_endpoint.iter().find_map(|(endpoint, held)| {
            let i = held.iter().position(|(_, _, held_id)| *held_id == id)?;
            Some((endpoint.clone(), i))
        });
        let (endpoint, i) = found?;
        let held = self.by_endpoint.get_mut(&endpoint)?;
        let (_, at, _) = held.swap_remove(i);
        if held.is_empty() {
            self.by_endpoint.remove(&endpoint);
        }
        Some(at)
    }

    /// Moves every held delivery's time `back` ms earlier (the clock stepped back).
    fn shift_back(&mut self, back: u64) {
        for held in self.by_endpoint.values_mut() {
            for (_, at, _) in held.iter_mut() {
                *at = at.saturating_sub(back);
            }
        }
    }

    fn contains(&self, id: Id) -> bool {
        self.by_endpoint
            .values()
            .any(|held| held.iter().any(|(_, _, held_id)| *held_id == id))
    }

    /// Takes out the deliveries of every endpoint not in `disabled`, by endpoint.
    fn release(&mut self, disabled: &BTreeSet<String>) -> Vec<(String, Vec<Held>)> {
        let enabled: Vec<String> = self
            .by_endpoint
            .keys()
            .filter(|e| !disabled.contains(*e))
            .cloned()
            .collect();
        enabled
            .into_iter()
            .filter_map(|endpoint| {
                let held = self.by_endpoint.remove(&endpoint)?;
                Some((endpoint, held))
            })
            .collect()
    }

    /// Adds the held deliveries to the hosts' loads (listing a host that has nothing else).
    fn add_to(&self, loads: &mut Vec<HostLoad>, rates: &RateLimits) {
        let mut by_host: HashMap<&str, usize> = HashMap::new();
        for (host, _, _) in self.by_endpoint.values().flatten() {
            *by_host.entry(host).or_default() += 1;
        }
        for (host, n) in by_host {
            match loads.iter_mut().find(|l| l.host == host) {
                Some(load) => {
                    load.pending += n;
                    load.held_for_disabled_endpoint += n;
                }
                None => loads.push(HostLoad {
                    host: host.to_string(),
                    pending: n,
                    held_for_disabled_endpoint: n,
                    in_flight: 0,
                    paused: false,
                    next_at: None,
                    circuit: Circuit::default(),
                    retry_after_until: None,
                    rate_limit: rates.for_host(host),
                }),
            }
        }
        loads.sort_by(|a, b| a.host.cmp(&b.host));
    }
}

/// Attempts whose answer is in and whose record is not yet committed, per slot of
/// `delivery.concurrency`: past `RECORDING_PER_SLOT * concurrency` of them, no new attempt starts
/// until the writer catches up, so a slow disk bounds the work waiting on it.
const RECORDING_PER_SLOT: usize = 4;

/// Attempts under way, by phase (the ids of both phases are in the [`InFlight`] set).
#[derive(Debug, Default)]
pub struct Attempts {
    /// Waiting on their host: bounded by `concurrency`, as per host by `per_host_concurrency`.
    requests: usize,
    /// Answered, waiting for their record to be committed.
    recording: usize,
    /// Deliveries whose abandoned attempt could not be recorded either (see
    /// [`Finished::Unrecorded`]), with how many times in a row: each waits longer before it is
    /// tried again.
    unrecorded: HashMap<Id, u32>,
}

impl Attempts {
    /// Whether another attempt may start: fewer than `concurrency` requests wait on their
    /// hosts, and the writer is keeping up with the answered ones. Attempts being recorded do
    /// not hold a request slot, so a host that answers fast cannot crowd out the others.
    fn may_start(&self, concurrency: usize) -> bool {
        self.requests < concurrency
            && self.recording < concurrency.saturating_mul(RECORDING_PER_SLOT)
    }

    fn started(&mut self) {
        self.requests += 1;
    }

    fn released(&mut self) {
        debug_assert!(self.requests > 0, "a release without a request");
        self.requests = self.requests.saturating_sub(1);
        self.recording += 1;
    }

    fn recorded(&mut self) {
        debug_assert!(self.recording > 0, "a record without a release");
        self.recording = self.recording.saturating_sub(1);
    }
}

pub struct Scheduler {
    pub queue: Queue,
    /// Global pause: no new attempt starts while set. Loaded from the store at start.
    pub paused: bool,
    /// Operator instructions from the admin API.
    pub control_rx: mpsc::UnboundedReceiver<Control>,
    /// Requests in flight at once across all hosts (`delivery.concurrency`).
    pub concurrency: usize,
    /// Attempts under way, by phase.
    pub attempts: Attempts,
    pub deliverer: Arc<Deliverer>,
    pub in_flight: InFlight,
    pub metrics: Metrics,
    /// New pending work, sent by the writer after each commit.
    pub enqueued_rx: mpsc::UnboundedReceiver<Vec<Enqueued>>,
    /// Endpoints disabled by a 410; their deliveries wait in `parked` until enabled.
    pub gate: EndpointGate,
    /// Where host breaker states are published for the admin API.
    pub host_health: HostHealth,
    pub backlog: Backlog,
    /// Deliveries held for disabled endpoints (see `gate`).
    pub parked: Parked,
    /// Deliveries withdrawn for a cancel not yet stored, with where each would be queued. A
    /// push of one of them (its `Enqueued` arriving after the withdrawal, its endpoint
    /// enabled) waits here instead of starting an attempt, until the cancel is stored
    /// (`Control::Cancelled`: forgotten) or fails (`Control::Requeue`: queued as held).
    pub withdrawn: HashMap<Id, (Host, u64)>,
}

impl Scheduler {
    /// Runs until `drain` turns true and the attempts in flight have finished, or `grace` after
    /// that, whichever is first. Attempts cut off by the grace period stay pending in the store.
    pub async fn run(mut self, mut drain: watch::Receiver<bool>, grace: Duration) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut draining = *drain.borrow();
        // Set once the writer's channel closed, so the closed channel is not polled again.
        let mut writer_gone = false;
        let mut gate_rx = self.gate.subscribe();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut next_sweep = clock::now_ms().saturating_add(FORGET_IDLE_EVERY_MS);
        let pending_gauge = self.metrics.queue_depth.with_label_values(&["pending"]);
        let in_progress_gauge = self.metrics.queue_depth.with_label_values(&["in_progress"]);
        let busy = self.metrics.scheduler_busy.clone();
        loop {
            let loop_top = std::time::Instant::now();
            if draining {
                if self.in_flight.is_empty() {
                    break;
                }
            } else if !self.paused {
                let now = clock::now_ms();
                if now >= next_sweep {
                    next_sweep = now.saturating_add(FORGET_IDLE_EVERY_MS);
                    for host in self.queue.forget_idle(now) {
                        let _ = self.metrics.host_circuit_open.remove_label_values(&[&host]);
                        self.host_health.set(&host, None);
                    }
                    self.host_health.forget_passed(now);
                }
                while self.may_start() {
                    let Some((id, host)) = self.queue.pop_due(now) else {
                        break;
                    };
                    let paced_at = self.queue.paced_at(&host);
                    self.dispatch(id, host, paced_at, done_tx.clone());
                }
            }
            // Steps seen by the starts above, or while paused (no starts).
            self.note_clock();
            for (host, view) in self.queue.take_restated() {
                self.publish_health(&host, view);
            }
            // Pending as the store counts it (`in_progress` apart): held deliveries included.
            let pending = self.queue.pending() + self.parked.len();
            let in_flight = self.in_flight.len();
            pending_gauge.set(pending as i64);
            in_progress_gauge.set(in_flight as i64);
            self.backlog.set(pending + in_flight);

            self.metrics.paused.set(i64::from(self.paused));

            let wake = match (draining || self.paused, self.may_start()) {
                (false, true) => self.queue.next_wake(),
                _ => None,
            };
            // Wake for the sweep too while it may have something to forget.
            let wake = match (wake, self.queue.knows_hosts() && !draining && !self.paused) {
                (Some(at), true) => Some(at.min(next_sweep)),
                (None, true) => Some(next_sweep),
                (wake, false) => wake,
            };
            let sleep_for =
                wake.map(|at| Duration::from_millis(at.saturating_sub(clock::now_ms())));
            // The loop's own work, for `hookrelay_scheduler_busy_seconds_total`: from the top of
            // the loop to here, and from an event's arrival to the end of its handling.
            let before_wait = loop_top.elapsed();
            let woke;
            tokio::select! {
                batch = self.enqueued_rx.recv(), if !writer_gone => {
                    woke = std::time::Instant::now();
                    let now = self.note_clock();
                    match batch {
                        Some(batch) => {
                            // A new delivery (ingested, replayed, an event) is due when it is
                            // made: at most now, so one made before a clock step back and
                            // announced after the queue moved for it is not held by the step.
                            for e in batch {
                                self.push(&e.host, e.next_at.min(now), e.id);
                            }
                        }
                        // The writer is gone: nothing new will arrive; finish what is in flight.
                        None => {
                            writer_gone = true;
                            draining = true;
                            deadline.get_or_insert(tokio::time::Instant::now() + grace);
                        }
                    }
                }
                Some(control) = self.control_rx.recv() => {
                    woke = std::time::Instant::now();
                    self.note_clock();
                    self.control(control);
                }
                Some(finished) = done_rx.recv() => {
                    woke = std::time::Instant::now();
                    self.note_clock();
                    self.finished(finished, &done_tx);
                    // Attempts finish in bursts: take what else has arrived before the loop
                    // updates its gauges and timers again.
                    while let Ok(finished) = done_rx.try_recv() {
                        self.finished(finished, &done_tx);
                    }
                }
                changed = gate_rx.changed() => {
                    woke = std::time::Instant::now();
                    self.note_clock();
                    if changed.is_ok() {
                        let disabled = gate_rx.borrow_and_update().clone();
                        for (endpoint, held) in self.parked.release(&disabled) {
                            tracing::info!(endpoint, deliveries = held.len(), "endpoint enabled: its deliveries resume");
                            for (host, at, id) in held {
                                self.push(&host, at, id);
                            }
                        }
                    }
                }
                _ = sleep_opt(sleep_for) => woke = std::time::Instant::now(),
                changed = drain.changed(), if !draining => {
                    woke = std::time::Instant::now();
                    if changed.is_err() || *drain.borrow() {
                        draining = true;
                        deadline = Some(tokio::time::Instant::now() + grace);
                        tracing::info!(in_flight = self.in_flight.len(), "draining: no new attempts start");
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    tracing::warn!(
                        in_flight = self.in_flight.len(),
                        "grace period over; unfinished attempts stay pending and are retried at next start"
                    );
                    break;
                }
            }
            busy.inc_by((before_wait + woke.elapsed()).as_secs_f64());
        }
    }

    /// Whether another attempt may start: a slot is free, and the store can still record it.
    /// Once redb has latched (a write failed inside it) no attempt's result can be stored
    /// until hookrelay restarts, so an attempt would send its request and then leave the
    /// delivery pending to be sent again: the same webhook, every few minutes, for as long as
    /// the process lives. None starts; `/healthz` fails so that a restart reopens the store.
    fn may_start(&self) -> bool {
        self.attempts.may_start(self.concurrency) && !self.deliverer.writer.latched()
    }

    /// Tells the queue the time before an event is handled (see `Queue::observe`), and moves
    /// the times kept outside it when the clock stepped back. That time.
    fn note_clock(&mut self) -> u64 {
        let now = clock::now_ms();
        self.queue.observe(now);
        self.shift_kept_times();
        now
    }

    /// After a step back seen by the queue: held and withdrawn deliveries move as it did.
    fn shift_kept_times(&mut self) {
        let back = self.queue.take_step();
        if back == 0 {
            return;
        }
        tracing::warn!(
            back_ms = back,
            "the system clock stepped back: queued deliveries and holds keep the time they had left"
        );
        self.parked.shift_back(back);
        for (_, at) in self.withdrawn.values_mut() {
            *at = at.saturating_sub(back);
        }
    }

    /// Queues a pending delivery, unless it is withdrawn for a cancel: then only where it would
    /// be queued is kept.
    fn push(&mut self, host: &str, at: u64, id: Id) {
        // Nearly always empty: then no lookup on the path of every announced delivery.
        if self.withdrawn.is_empty() {
            return self.queue.push(host, at, id);
        }
        match self.withdrawn.get_mut(&id) {
            Some(held) => *held = (Host::from(host), at),
            None => self.queue.push(host, at, id),
        }
    }

    fn finished(&mut self, finished: Finished, done_tx: &mpsc::UnboundedSender<Finished>) {
        match finished {
            // Every attempt releases its slot, even one that never reached the host (endpoint
            // disabled, delivery gone): a half-open circuit must not wait forever for a probe
            // result that will not come.
            Finished::Released {
                host,
                report,
                paced_at,
            } => {
                self.attempts.released();
                if let Some(view) =
                    self.queue
                        .release_paced(&host, report, clock::now_ms(), paced_at)
                {
                    self.publish_health(&host, view);
                }
            }
            Finished::Recorded { id, host, result } => {
                if !self.attempts.unrecorded.is_empty() {
                    self.attempts.unrecorded.remove(&id);
                }
                self.recorded(id, host, result);
            }
            // Still in flight (and counted as being recorded) until its record is stored.
            Finished::Abandoned { id, host, panic } => {
                tracing::error!(
                    id = %DeliveryId(id),
                    panic = panic.as_deref().unwrap_or("none"),
                    "an attempt ended without a result (a bug: please report it); it is recorded as INTERNAL_ERROR and retried within the delivery's retry budget"
                );
                let deliverer = self.deliverer.clone();
                spawn_reported(
                    id,
                    host,
                    done_tx.clone(),
                    |id, host, panic| Finished::Unrecorded { id, host, panic },
                    async move { deliverer.record_abandoned(id, panic.as_deref()).await },
                );
            }
            Finished::Unrecorded { id, host, panic } => {
                // Counted with the recorded ones, so the INTERNAL_ERROR alert sees it.
                self.metrics
                    .attempts
                    .with_label_values(&[Classification::InternalError.as_str()])
                    .inc();
                let times = self.attempts.unrecorded.entry(id).or_default();
                *times += 1;
                let delay = unrecorded_delay_ms(*times);
                tracing::error!(
                    id = %DeliveryId(id),
                    times = *times,
                    retry_in_ms = delay,
                    panic = panic.as_deref().unwrap_or("none"),
                    "an abandoned attempt could not be recorded (a bug: please report it); the delivery stays pending and is tried again later"
                );
                let result = AttemptResult {
                    next_at: Some(clock::now_ms().saturating_add(delay)),
                    parked: None,
                };
                self.recorded(id, host, result);
            }
        }
    }

    fn recorded(&mut self, id: Id, host: Host, result: AttemptResult) {
        self.attempts.recorded();
        self.in_flight.remove(id);
        match (result.parked, result.next_at) {
            // Park only while the endpoint is still disabled: an operator may have enabled it
            // while this attempt was finishing.
            (Some(endpoint), Some(at)) if self.gate.is_disabled(&endpoint) => {
                self.queue.finish(&host, id, None);
                self.parked.park(endpoint, host, at, id);
            }
            (_, next_at) => self.queue.finish(&host, id, next_at),
        }
    }

    fn control(&mut self, control: Control) {
        match control {
            Control::Pause(paused) => {
                tracing::info!(paused, "delivery pause changed");
                self.paused = paused;
            }
            Control::HostPause { host, paused } => {
                tracing::info!(%host, paused, "host pause changed");
                self.queue.set_host_paused(&host, paused);
            }
            Control::Withdraw {
                host,
                next_at,
                id,
                reply,
            } => {
                // The loop is the only place attempts start, so nothing can start this one
                // between this check and the removal.
                let withdrawn = !self.in_flight.contains(id);
                if withdrawn {
                    // Queued, held for a disabled endpoint (a cancel must not leave it
                    // counted), or not here yet (its `Enqueued` still on its way): from now on
                    // it only waits, at the time it was really due (a retry may have moved it
                    // since the admin API read it).
                    let at = self
                        .queue
                        .remove(&host, next_at, id)
                        .or_else(|| self.parked.remove(id))
                        .unwrap_or(next_at);
                    self.withdrawn.insert(id, (Host::from(host.as_str()), at));
                    // Cancelled (or requeued if the cancel fails, starting its count afresh).
                    self.attempts.unrecorded.remove(&id);
                }
                let _ = reply.send(withdrawn);
            }
            // A cancel whose commit failed: queued again where it was (or where a push that
            // came meanwhile put it), once.
            Control::Requeue { host, next_at, id } => {
                let (host, at) = self
                    .withdrawn
                    .remove(&id)
                    .unwrap_or_else(|| (Host::from(host.as_str()), next_at));
                if !self.in_flight.contains(id) {
                    self.queue.remove(&host, at, id);
                    self.queue.push(&host, at, id);
                }
            }
            Control::Cancelled(id) => {
                self.withdrawn.remove(&id);
            }
            Control::Applied(reply) => {
                let _ = reply.send(());
            }
            Control::RetryNow {
                host,
                delivery,
                reply,
            } => {
                let now = clock::now_ms();
                let outcome = match delivery {
                    Some((_, id)) if self.in_flight.contains(id) => RetryNow::InFlight,
                    Some((_, id)) if self.withdrawn.contains_key(&id) => RetryNow::Withdrawn,
                    Some((_, id)) if self.parked.contains(id) => RetryNow::Parked,
                    Some((next_at, id)) => match self.queue.retry_now(&host, next_at, id, now) {
                        Some(was_due) => RetryNow::Done {
                            due_now: 1,
                            brought_forward: usize::from(was_due > now),
                        },
                        None => RetryNow::NotQueued,
                    },
                    None => match self.queue.retry_host_now(&host, now) {
                        Some((due_now, brought_forward, view)) => {
                            self.publish_health(&host, view);
                            RetryNow::Done {
                                due_now,
                                brought_forward,
                            }
                        }
                        None => RetryNow::Done {
                            due_now: 0,
                            brought_forward: 0,
                        },
                    },
                };
                let _ = reply.send(outcome);
            }
            Control::Hosts(reply) => {
                let mut loads = self.queue.hosts(clock::now_ms());
                self.parked.add_to(&mut loads, &self.queue.rates);
                let _ = reply.send(loads);
            }
        }
    }

    fn dispatch(
        &mut self,
        id: Id,
        host: Host,
        paced_at: Option<u64>,
        done_tx: mpsc::UnboundedSender<Finished>,
    ) {
        self.in_flight.insert(id);
        self.attempts.started();
        let deliverer = self.deliverer.clone();
        spawn_attempt(id, host, paced_at, done_tx, move |slot| async move {
            deliverer.attempt(id, slot).await
        });
    }

    /// Publishes a host's changed health to the admin view and the circuit metric.
    fn publish_health(&self, host: &str, view: HostHealthView) {
        let gauge = &self.metrics.host_circuit_open;
        if view.circuit.is_open() {
            if gauge.with_label_values(&[host]).get() == 0 {
                tracing::warn!(
                    host,
                    "circuit open: the host's deliveries are held; probing"
                );
            }
            gauge.with_label_values(&[host]).set(1);
        } else if gauge.remove_label_values(&[host]).is_ok() {
            tracing::info!(host, "circuit closed: deliveries to the host resume");
        }
        // Closed circuits with a few failures are not shown: the queue may forget them.
        let plain = !view.circuit.is_open() && view.not_before.is_none();
        self.host_health.set(host, (!plain).then_some(view));
    }
}

/// How often the scheduler forgets idle hosts whose holds have passed (`Queue::forget_idle`).
const FORGET_IDLE_EVERY_MS: u64 = 60_000;

/// How long a delivery waits before it is tried again when its attempt ended without a result
/// and so did recording that (see [`Finished::Unrecorded`]), the `times`-th time in a row: 5 s,
/// doubling, at most an hour. Nothing was recorded, so the delivery's retry budget cannot end
/// it; the growing wait keeps such a delivery from being tried every few seconds.
fn unrecorded_delay_ms(times: u32) -> u64 {
    const FIRST_MS: u64 = 5_000;
    const MAX_MS: u64 = 3_600_000;
    FIRST_MS
        .saturating_mul(1u64 << times.saturating_sub(1).min(20))
        .min(MAX_MS)
}

/// Runs one attempt in a task of its own. Whatever happens in it, the scheduler hears
/// `Released` and then `Recorded` (or `Abandoned`) for the attempt: `slot` reports `Released`
/// when the attempt releases it or drops it, and the last report is sent when the task's future
/// is done or dropped, so an attempt that panics is tried again later instead of staying in
/// flight until a restart. (Locals drop in reverse order, so the slot, held by the attempt's
/// future, goes first.)
fn spawn_attempt<F, Fut>(
    id: Id,
    host: Host,
    paced_at: Option<u64>,
    done_tx: mpsc::UnboundedSender<Finished>,
    attempt: F,
) where
    F: FnOnce(SlotRelease) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = AttemptResult> + Send + 'static,
{
    let (release_tx, release_host) = (done_tx.clone(), host.clone());
    let slot = SlotRelease::new(move |report| {
        let _ = release_tx.send(Finished::Released {
            host: release_host,
            report,
            paced_at,
        });
    });
    spawn_reported(
        id,
        host,
        done_tx,
        |id, host, panic| Finished::Abandoned { id, host, panic },
        attempt(slot),
    );
}

/// Runs `work` (an attempt, or the recording of an abandoned one) in a task of its own and
/// reports `Recorded` with its result, or `abandoned` if the task ends without one (with the
/// panic's message if it panicked; `work` is dropped before that report is sent).
fn spawn_reported<Fut>(
    id: Id,
    host: Host,
    done_tx: mpsc::UnboundedSender<Finished>,
    abandoned: fn(Id, Host, Option<String>) -> Finished,
    work: Fut,
) where
    Fut: std::future::Future<Output = AttemptResult> + Send + 'static,
{
    tokio::spawn(async move {
        let mut recorded = RecordedReport {
            done_tx,
            id,
            host,
            abandoned,
            result: None,
            panic: None,
        };
        match panics::CatchUnwind::new(work).await {
            Ok(result) => recorded.result = Some(result),
            Err(message) => recorded.panic = Some(message),
        }
    });
}

/// Sends an attempt's last report when dropped: `Recorded` with its result, or its `abandoned`
/// report.
/// (It does not log: at shutdown the runtime drops unfinished tasks, which is not a fault, and
/// the scheduler that would hear of it has stopped.)
struct RecordedReport {
    done_tx: mpsc::UnboundedSender<Finished>,
    id: Id,
    host: Host,
    abandoned: fn(Id, Host, Option<String>) -> Finished,
    result: Option<AttemptResult>,
    panic: Option<String>,
}

impl Drop for RecordedReport {
    fn drop(&mut self) {
        let (id, host) = (self.id, self.host.clone());
        let _ = self.done_tx.send(match self.result.take() {
            Some(result) => Finished::Recorded { id, host, result },
            None => (self.abandoned)(id, host, self.panic.take()),
        });
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::HostSignal;

    #[test]
    fn pops_in_due_order_and_respects_time() {
        let mut q = Queue::new(8);
        q.push("a:80", 30, Id(3));
        q.push("b:80", 10, Id(1));
        q.push("a:80", 20, Id(2));
        assert_eq!(q.pending(), 3);
        assert_eq!(q.next_wake(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(10).map(|x| x.0), Some(Id(1)));
        assert_eq!(q.pop_due(19), None);
        assert_eq!(q.pop_due(100).map(|x| x.0), Some(Id(2)));
        assert_eq!(q.pop_due(100).map(|x| x.0), Some(Id(3)));
        assert_eq!(q.pop_due(100), None);
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn per_host_limit_holds_a_host_but_not_others() {
        let mut q = Queue::new(2);
        for i in 0..5 {
            q.push("slow:80", 0, Id(i));
        }
        q.push("fast:80", 1, Id(100));
        q.push("fast:80", 1, Id(101));
        q.push("fast:80", 1, Id(102));
        // The oldest work first, then the hosts take turns: fast gets its turn although slow
        // has older work.
        let hosts: Vec<(Id, Host)> = (0..4).map(|_| q.pop_due(10).unwrap()).collect();
        let order: Vec<&str> = hosts.iter().map(|(_, h)| &**h).collect();
        assert_eq!(order, ["slow:80", "fast:80", "slow:80", "fast:80"]);
        // Both at their limit.
        assert_eq!(q.pop_due(10), None);
        q.release("slow:80", HostReport::NEUTRAL, 0);
        q.finish("slow:80", hosts[0].0, None);
        assert_eq!(q.pop_due(10).map(|x| x.0), Some(Id(2)));
    }

    /// Retries due together ahead of newer work take turns with the host's new deliveries
    /// instead of all going first; with only retries due, they go in due order.
    #[test]
    fn new_deliveries_and_retries_take_turns() {
        let id = |ms: u64| Id::from_parts(ms, 0);
        let mut q = Queue::new(1);
        // Five retries (created at 1..=5, due at 100..=104), three new (due when created).
        for i in 0..5 {
            q.push("h:80", 100 + i, id(1 + i));
        }
        for i in 0..3 {
            q.push("h:80", 200 + i, id(200 + i));
        }
        let mut order = Vec::new();
        for _ in 0..8 {
            let (started, _) = q.pop_due(1_000).unwrap();
            order.push(started.ms());
            q.release("h:80", HostReport::NEUTRAL, 1_000);
            q.finish("h:80", started, None);
        }
        assert_eq!(order, [200, 1, 201, 2, 202, 3, 4, 5]);
        // What is not due yet waits, whichever set it is in.
        q.push("h:80", 2_000, id(2));
        q.push("h:80", 3_000, id(3_000));
        assert_eq!(q.pop_due(1_999), None);
        assert_eq!(q.pop_due(2_000).map(|x| x.0), Some(id(2)));
    }

    /// An open circuit's probe is the newest new delivery due, not the retry due first:
    /// retries that keep failing for reasons of their own would keep the circuit open for good.
    #[test]
    fn an_open_circuits_probe_is_the_newest_due_delivery() {
        let id = |ms: u64| Id::from_parts(ms, 0);
        let mut q = Queue::new(8).with_breaker(BreakerPolicy {
            threshold: 3,
            probe_interval_ms: 1_000,
        });
        for i in 0..3 {
            q.push("h:80", 100 + i, id(1 + i));
        }
        let failed = HostReport {
            signal: HostSignal::Failed,
            ..SENT
        };
        for _ in 0..3 {
            let (started, _) = q.pop_due(500).unwrap();
            q.release("h:80", failed, 500);
            q.finish("h:80", started, Some(600));
        }
        assert!(q.hosts(500)[0].circuit.is_open());
        q.push("h:80", 700, id(700));
        q.push("h:80", 800, id(800));
        q.push("h:80", 9_000, id(9_000));
        assert_eq!(q.pop_due(1_499), None, "open until its probe time");
        assert_eq!(
            q.pop_due(1_500).map(|x| x.0),
            Some(id(800)),
            "the newest due, not a newer one that is not due yet"
        );
        assert_eq!(q.pop_due(1_500), None, "one probe at a time");
        // With no new delivery due, the probe is the retry due last.
        let mut q = Queue::new(8).with_breaker(BreakerPolicy {
            threshold: 1,
            probe_interval_ms: 1_000,
        });
        q.push("h:80", 100, id(1));
        let (started, _) = q.pop_due(100).unwrap();
        q.release("h:80", failed, 100);
        q.finish("h:80", started, Some(300));
        q.push("h:80", 200, id(2));
        q.push("h:80", 400, id(3));
        assert_eq!(q.pop_due(1_100).map(|x| x.0), Some(id(3)));
    }

    #[test]
    fn retry_now_moves_a_delivery_forward_and_keeps_its_hosts_breaker_count() {
        let mut q = Queue::new(8).with_breaker(BreakerPolicy {
            threshold: 3,
            probe_interval_ms: 1_000,
        });
        q.push("h:80", 0, Id(1));
        let (id, _) = q.pop_due(10).unwrap();
        let failed = HostReport {
            signal: HostSignal::Failed,
            ..SENT
        };
        q.release("h:80", failed, 10);
        q.finish("h:80", id, Some(5_000));
        assert_eq!(q.pop_due(100), None);
        // Brought forward; its one failure still counts.
        assert_eq!(q.retry_now("h:80", 5_000, Id(1), 100), Some(5_000));
        assert_eq!(q.pending(), 1);
        assert_eq!(q.hosts(100)[0].circuit, Circuit::Closed { failures: 1 });
        assert_eq!(q.pop_due(100).map(|x| x.0), Some(Id(1)));
        // Not queued (in flight now): nothing moves.
        assert_eq!(q.retry_now("h:80", 100, Id(1), 100), None);
        assert_eq!(q.retry_now("other:80", 0, Id(9), 100), None);
    }

    #[test]
    fn retry_host_now_brings_every_delivery_forward_and_clears_its_holds() {
        let mut q = Queue::new(8).with_breaker(BreakerPolicy {
            threshold: 1,
            probe_interval_ms: 1_000_000,
        });
        q.push("h:80", 0, Id(1));
        q.push("h:80", 50, Id(2));
        let (id, _) = q.pop_due(10).unwrap();
        let failed = HostReport {
            signal: HostSignal::Failed,
            hold_host_until: Some(2_000_000),
            ..SENT
        };
        q.release("h:80", failed, 10);
        q.finish("h:80", id, Some(5_000));
        assert!(q.hosts(100)[0].circuit.is_open());
        assert_eq!(q.pop_due(100), None);
        let (due_now, brought_forward, view) = q.retry_host_now("h:80", 100).unwrap();
        assert_eq!((due_now, brought_forward), (2, 1));
        assert_eq!((view.circuit, view.not_before), (Circuit::default(), None));
        let mut started = vec![q.pop_due(100).unwrap().0, q.pop_due(100).unwrap().0];
        started.sort();
        assert_eq!(started, [Id(1), Id(2)]);
        assert!(q.retry_host_now("unknown:80", 100).is_none());
    }

    #[test]
    fn turn_taking_never_delays_due_work_when_the_clock_steps_back() {
        let mut q = Queue::new(8);
        q.push("h:80", 0, Id(1));
        q.push("h:80", 0, Id(2));
        let now = 10_000_000;
        assert_eq!(q.pop_due(now).map(|x| x.0), Some(Id(1)));
        // The clock steps back an hour: Id(2) was due long ago and still goes at once.
        assert_eq!(q.pop_due(now - 3_600_000).map(|x| x.0), Some(Id(2)));
    }

    /// A hold set by a release after the clock stepped back, and before any start saw the step,
    /// is on the new clock already: it is not shifted again.
    #[test]
    fn holds_set_after_the_clock_stepped_back_are_not_shifted_again() {
        let policy = BreakerPolicy {
            threshold: 1,
            probe_interval_ms: 30_000,
        };
        let mut q = Queue::new(8).with_breaker(policy);
        let now = 10_000_000;
        q.push("down:80", now, Id(1));
        q.push("held:80", now, Id(2));
        let (_, down) = q.pop_due(now).unwrap();
        let (_, held) = q.pop_due(now).unwrap();
        // The clock steps back an hour while both are out; their answers come first.
        let back = now - 3_600_000;
        let failed = HostReport {
            signal: HostSignal::Failed,
            ..HostReport::NEUTRAL
        };
        q.release(&down, failed, back);
        q.finish(&down, Id(1), Some(back));
        let hold = HostReport {
            hold_host_until: Some(back + 60_000),
            ..HostReport::NEUTRAL
        };
        q.release(&held, hold, back);
        q.finish(&held, Id(2), Some(back));
        assert_eq!(q.pop_due(back + 1), None, "probe in 30 s, hold for 60 s");
        assert_eq!(
            q.pop_due(back + 30_000).map(|x| x.0),
            Some(Id(1)),
            "the probe"
        );
        assert_eq!(q.pop_due(back + 59_999), None);
        assert_eq!(q.pop_due(back + 60_000).map(|x| x.0), Some(Id(2)));
    }

    /// A rate limit's pace, a `Retry-After` hold and an open circuit's probe time keep the
    /// time they had left when the clock steps back, instead of holding the host for the step.
    #[test]
    fn holds_kept_in_memory_do_not_grow_when_the_clock_steps_back() {
        let policy = BreakerPolicy {
            threshold: 1,
            probe_interval_ms: 30_000,
        };
        let mut q = Queue::new(8)
            .with_rates(limits(None, &[("paced", "10/s")]))
            .with_breaker(policy);
        let now = 10_000_000;
        let hour = 3_600_000;
        // Paced: one start every 100 ms.
        q.push("paced:443", now, Id(1));
        q.pop_due(now).unwrap();
        // Held by a Retry-After of 60 s.
        q.push("held:80", now, Id(2));
        let (_, held) = q.pop_due(now).unwrap();
        let hold = HostReport {
            hold_host_until: Some(now + 60_000),
            ..HostReport::NEUTRAL
        };
        q.release(&held, hold, now);
        q.finish(&held, Id(2), Some(now));
        // An open circuit, probing in 30 s.
        q.push("down:80", now, Id(3));
        let (_, down) = q.pop_due(now).unwrap();
        let failed = HostReport {
            signal: HostSignal::Failed,
            ..HostReport::NEUTRAL
        };
        q.release(&down, failed, now);
        q.finish(&down, Id(3), Some(now));
        assert!(matches!(q.circuit("down:80"), Some(Circuit::Open { .. })));

        // The clock steps back an hour; then a new webhook arrives for each host. (The
        // retries above, due at the step, move back with it: still due, behind their hosts'
        // holds.)
        let back = now - hour;
        assert!(q.take_restated().is_empty());
        assert_eq!(q.pop_due(back), None);
        // The admin's health view is told the holds' new times.
        let mut restated = q.take_restated();
        restated.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(restated.len(), 2, "{restated:?}");
        assert_eq!(&*restated[0].0, "down:80");
        assert!(matches!(
            restated[0].1.circuit,
            Circuit::Open { probe_at, .. } if probe_at == back + 30_000
        ));
        assert_eq!(&*restated[1].0, "held:80");
        assert_eq!(restated[1].1.not_before, Some(back + 60_000));
        assert!(q.take_restated().is_empty());
        q.push("paced:443", back, Id(4));
        q.push("held:80", back, Id(5));
        q.push("down:80", back, Id(6));
        assert_eq!(q.pop_due(back), None, "the pace still holds for its 100 ms");
        assert_eq!(q.pop_due(back + 100).map(|x| x.0), Some(Id(4)));
        assert_eq!(q.pop_due(back + 29_999), None);
        assert_eq!(
            q.pop_due(back + 30_000).map(|x| x.0),
            Some(Id(6)),
            "the probe"
        );
        assert_eq!(
            q.pop_due(back + 59_999),
            None,
            "the hold still has its 60 s"
        );
        // The retry due since before the step goes first, then the new webhook.
        assert_eq!(q.pop_due(back + 60_000).map(|x| x.0), Some(Id(2)));
        assert_eq!(q.pop_due(back + 60_000).map(|x| x.0), Some(Id(5)));
    }

    /// The health view restated after a step is the host's view when it is published: an
    /// event handled between (a success closing the circuit) is not undone by it.
    #[test]
    fn a_restated_view_is_the_hosts_latest() {
        let policy = BreakerPolicy {
            threshold: 1,
            probe_interval_ms: 30_000,
        };
        let mut q = Queue::new(8).with_breaker(policy);
        let now = 10_000_000;
        q.push("h:80", now, Id(1));
        q.push("h:80", now, Id(2));
        let (_, host) = q.pop_due(now).unwrap();
        q.pop_due(now).unwrap();
        let failed = HostReport {
            signal: HostSignal::Failed,
            ..HostReport::NEUTRAL
        };
        q.release(&host, failed, now);
        assert!(matches!(q.circuit("h:80"), Some(Circuit::Open { .. })));
        // The clock steps back; the release that notices it is the other attempt's success.
        let back = now - 3_600_000;
        let healthy = HostReport {
            signal: HostSignal::Healthy,
            ..SENT
        };
        q.release(&host, healthy, back);
        let closed = q.circuit("h:80");
        assert!(matches!(closed, Some(Circuit::Closed { .. })), "{closed:?}");
        let restated = q.take_restated();
        assert_eq!(restated.len(), 1, "{restated:?}");
        assert!(!restated[0].1.circuit.is_open(), "{restated:?}");
    }

    /// Work queued when the clock steps back keeps the time it had left: what was due is still
    /// due (a backlog waiting for a slot, a paused host's deliveries), and a retry waits out its
    /// backoff, not the step as well. Ids carry their creation time, as the writer makes them.
    #[test]
    fn queued_work_keeps_the_time_it_had_left_when_the_clock_steps_back() {
        let now = 10_000_000;
        let hour = 3_600_000;
        let made = |n: u128| Id::from_parts(now - 1_000, n);
        let mut q = Queue::new(1);
        // A backlog behind a per-host limit of one.
        for n in 0..3 {
            q.push("h:80", now - 1_000, made(n));
        }
        // A paused host's delivery, due now.
        q.set_host_paused("p:80", true);
        q.push("p:80", now, made(10));
        // A retry due in 5 s.
        q.push("r:80", now + 5_000, made(20));
        let (first, host) = q.pop_due(now).unwrap();
        assert_eq!(first, made(0));
        assert_eq!(
            q.pop_due(now),
            None,
            "one at a time for h:80; r:80 not due yet"
        );
        // The clock steps back an hour while the first is in flight.
        let back = now - hour;
        q.release(&host, HostReport::NEUTRAL, back);
        q.finish(&host, first, None);
        assert_eq!(q.pop_due(back).map(|x| x.0), Some(made(1)), "still due");
        q.release(&host, HostReport::NEUTRAL, back);
        q.finish(&host, made(1), None);
        assert_eq!(q.pop_due(back).map(|x| x.0), Some(made(2)));
        q.set_host_paused("p:80", false);
        assert_eq!(q.pop_due(back).map(|x| x.0), Some(made(10)), "resumed: due");
        assert_eq!(q.pop_due(back + 4_999), None, "the retry's 5 s still hold");
        assert_eq!(q.pop_due(back + 5_000).map(|x| x.0), Some(made(20)));
        assert_eq!(q.take_step(), hour);
        assert_eq!(q.take_step(), 0);
    }

    #[test]
    fn hosts_with_old_backlogs_do_not_starve_a_host_with_new_work() {
        // Eight hosts with hours of backlog each, and a new delivery to another host: with
        // room for 9 attempts, the new one is among the first 9, not after 8,000 old ones.
        let mut q = Queue::new(1_000);
        for h in 0..8 {
            for i in 0..1_000 {
                q.push(&format!("old{h}:80"), i, Id(h * 1_000 + i as u128));
            }
        }
        q.push("new:80", 5_000_000, Id(1_000_000));
        let now = 5_000_000;
        let first: Vec<(Id, Host)> = (0..9).map(|_| q.pop_due(now).unwrap()).collect();
        assert!(
            first.iter().any(|(id, _)| *id == Id(1_000_000)),
            "{first:?}"
        );
        // And each old host got one of the others.
        let hosts: HashSet<&Host> = first.iter().map(|(_, h)| h).collect();
        assert_eq!(hosts.len(), 9, "{first:?}");
    }

    /// A neutral report from an attempt that sent its request.
    const SENT: HostReport = HostReport {
        sent: true,
        ..HostReport::NEUTRAL
    };

    fn limits(default: Option<&str>, hosts: &[(&str, &str)]) -> RateLimits {
        RateLimits {
            default: default.map(|r| Rate::parse(r).unwrap()),
            hosts: hosts
                .iter()
                .map(|(h, r)| (h.to_string(), Rate::parse(r).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn a_rate_limited_host_is_paced_and_others_flow() {
        let mut q = Queue::new(8).with_rates(limits(None, &[("paced", "2/s")]));
        for i in 0..3 {
            q.push("paced:443", 0, Id(i));
        }
        q.push("free:80", 0, Id(100));
        // One every 500 ms, no burst; the other host is not held.
        let mut started = Vec::new();
        for now in [0, 0, 0, 499, 500, 999, 1_000] {
            if let Some((id, host)) = q.pop_due(now) {
                started.push((now, id.0, host.to_string()));
                q.release(&host, SENT, now);
                q.finish(&host, id, None);
            }
        }
        let paced: Vec<_> = started
            .iter()
            .filter(|s| s.2 == "paced:443")
            .map(|s| (s.0, s.1))
            .collect();
        assert_eq!(paced, [(0, 0), (500, 1), (1_000, 2)]);
        assert!(
            started.iter().any(|s| s.2 == "free:80" && s.0 == 0),
            "{started:?}"
        );
        assert_eq!(q.hosts(0).len(), 0, "idle hosts are forgotten");
        // Going idle does not refill the bucket: new work waits for the pace.
        q.push("paced:443", 0, Id(5));
        assert_eq!(q.pop_due(1_010), None);
        assert_eq!(q.next_wake(), Some(1_500));
        assert_eq!(
            q.hosts(1_010)[0]
                .rate_limit
                .map(|r| r.to_string())
                .as_deref(),
            Some("2/s")
        );
        assert_eq!(q.pop_due(1_500).map(|x| x.0), Some(Id(5)));
    }

    #[test]
    fn an_attempt_that_sent_nothing_gives_its_place_back() {
        let mut q = Queue::new(8).with_rates(limits(None, &[("paced", "1/s")]));
        for i in 0..3 {
            q.push("paced:443", 0, Id(i));
        }
        // Held for a disabled endpoint: nothing sent, so the next one need not wait.
        let (id, host) = q.pop_due(0).unwrap();
        q.release(&host, HostReport::NEUTRAL, 0);
        q.finish(&host, id, None);
        let (id, host) = q
            .pop_due(0)
            .expect("not held for the attempt that sent nothing");
        // This one was sent: the next waits a second.
        let sent = HostReport {
            sent: true,
            ..HostReport::NEUTRAL
        };
        q.release(&host, sent, 0);
        q.finish(&host, id, None);
        assert_eq!(q.pop_due(999), None);
        assert!(q.pop_due(1_000).is_some());
    }

    #[test]
    fn a_place_is_given_back_only_if_no_later_start_took_the_next_one() {
        let mut q = Queue::new(8).with_rates(limits(None, &[("paced", "1/s")]));
        for i in 0..3 {
            q.push("paced:443", 0, Id(i));
        }
        // A starts at 0, B at 1000; then A turns out to have sent nothing.
        let (a, host) = q.pop_due(0).unwrap();
        let a_paced = q.paced_at(&host);
        let (b, _) = q.pop_due(1_000).unwrap();
        q.release_paced(&host, HostReport::NEUTRAL, 1_001, a_paced);
        q.finish(&host, a, None);
        // C still waits a second after B.
        assert_eq!(q.pop_due(1_999), None);
        q.release(&host, SENT, 1_001);
        q.finish(&host, b, None);
        assert!(q.pop_due(2_000).is_some());
    }

    #[test]
    fn the_default_rate_applies_to_every_host_and_the_pacing_of_gone_hosts_is_swept() {
        let mut q = Queue::new(8).with_rates(limits(Some("1/min"), &[]));
        // Ten rounds of 200 hosts seen once each, a round every 70 s: each host's pace runs a
        // minute ahead, so a round's entries are still needed during it and gone by the next.
        let mut most = 0;
        for round in 0..10u64 {
            for i in 0..200u64 {
                let (now, host) = (round * 70_000 + i, format!("h{round}-{i}:80"));
                q.push(&host, 0, Id(u128::from(round * 1_000 + i)));
                let (id, host) = q.pop_due(now).unwrap();
                assert!(q.pop_due(now).is_none());
                q.release(&host, SENT, now);
                q.finish(&host, id, None);
                most = most.max(q.paced.len());
            }
        }
        assert!(most >= 200, "every host of a round is paced: {most}");
        assert!(most <= 2 * 200 + 64, "swept as it grows: {most}");
    }

    #[test]
    fn idle_hosts_are_forgotten_once_their_holds_have_passed() {
        let policy = BreakerPolicy {
            threshold: 1,
            probe_interval_ms: 100,
        };
        let mut q = Queue::new(8).with_breaker(policy);
        let failed = HostReport {
            signal: HostSignal::Failed,
            hold_host_until: None,
            sent: true,
        };
        // dead:80 fails once: its circuit opens (probe at 100) and it has no work left.
        q.push("dead:80", 0, Id(1));
        let (id, host) = q.pop_due(0).unwrap();
        q.release(&host, failed, 0);
        q.finish(&host, id, None);
        // held:80 answers with a Retry-After until 500.
        q.push("held:80", 0, Id(2));
        let (id, host) = q.pop_due(0).unwrap();
        let hold = HostReport {
            signal: HostSignal::Neutral,
            hold_host_until: Some(500),
            sent: true,
        };
        q.release(&host, hold, 0);
        q.finish(&host, id, None);
        // busy:80 still has work.
        q.push("busy:80", 10_000, Id(3));
        assert_eq!(q.hosts(0).len(), 3);
        assert!(q.forget_idle(50).is_empty(), "nothing has passed yet");
        assert_eq!(q.forget_idle(100), vec![Arc::from("dead:80")]);
        assert_eq!(q.forget_idle(499), Vec::<Host>::new());
        assert_eq!(q.forget_idle(500), vec![Arc::from("held:80")]);
        assert_eq!(q.hosts(500).len(), 1, "busy:80 stays");
        // A forgotten host starts afresh.
        q.push("dead:80", 0, Id(4));
        assert_eq!(q.circuit("dead:80"), Some(Circuit::Closed { failures: 0 }));
    }

    #[test]
    fn a_paused_host_holds_its_work_while_others_flow() {
        let mut q = Queue::new(8);
        q.set_host_paused("held:80", true);
        q.push("held:80", 0, Id(1));
        q.push("free:80", 5, Id(2));
        assert_eq!(q.next_wake(), Some(5));
        assert_eq!(q.pop_due(10).map(|x| x.0), Some(Id(2)));
        assert_eq!(q.pop_due(10), None);
        assert_eq!(q.pending(), 1);
        let held = &q.hosts(10)[1];
        assert_eq!(
            (held.host.as_str(), held.pending, held.paused),
            ("held:80", 1, true)
        );
        q.set_host_paused("held:80", false);
        assert_eq!(q.pop_due(10).map(|x| x.0), Some(Id(1)));
    }

    #[test]
    fn paused_hosts_are_listed_even_when_idle_and_removal_is_exact() {
        let mut q = Queue::new(8);
        q.set_host_paused("idle:80", true);
        q.push("h:80", 7, Id(1));
        q.push("h:80", 9, Id(2));
        assert_eq!(q.remove("h:80", 7, Id(1)), Some(7));
        assert_eq!(q.remove("h:80", 7, Id(1)), None);
        assert_eq!(q.remove("nope:80", 1, Id(3)), None);
        assert_eq!(q.pending(), 1);
        let hosts = q.hosts(0);
        assert_eq!(hosts.len(), 2);
        assert_eq!(
            hosts[0],
            HostLoad {
                host: "h:80".into(),
                pending: 1,
                held_for_disabled_endpoint: 0,
                in_flight: 0,
                paused: false,
                next_at: Some(9),
                circuit: Circuit::default(),
                retry_after_until: None,
                rate_limit: None,
            }
        );
        assert!(hosts[1].paused && hosts[1].pending == 0);
        // A stale time still finds the entry, and says when it was really due.
        assert_eq!(q.remove("h:80", 1, Id(2)), Some(9));
        assert_eq!(q.hosts(0).len(), 1);
        assert_eq!(q.next_wake(), None);
    }

    #[test]
    fn a_released_slot_starts_the_next_attempt_while_the_host_is_kept_for_the_record() {
        let policy = BreakerPolicy {
            threshold: 3,
            probe_interval_ms: 100,
        };
        let failed = HostReport {
            signal: HostSignal::Failed,
            hold_host_until: None,
            sent: true,
        };
        let mut q = Queue::new(1).with_breaker(policy);
        q.push("h:80", 0, Id(1));
        q.push("h:80", 0, Id(2));
        let (a, host) = q.pop_due(0).unwrap();
        assert_eq!(q.pop_due(0), None, "the host's one slot is taken");
        q.release(&host, failed, 1);
        // The host has answered `a`; its record is not committed yet, and `b` may start.
        let (b, _) = q.pop_due(1).unwrap();
        assert_eq!(b, Id(2));
        assert_eq!(
            q.hosts(1)[0].in_flight,
            2,
            "both are in progress, as the store shows"
        );
        q.release(&host, failed, 2);
        // Nothing queued or sent, but two records pending: the host and its two failures stay.
        assert_eq!(q.circuit("h:80"), Some(Circuit::Closed { failures: 2 }));
        q.finish(&host, a, Some(3));
        q.finish(&host, b, Some(3));
        let (a, host) = q.pop_due(3).unwrap();
        q.release(&host, failed, 4);
        assert_eq!(
            q.circuit("h:80"),
            Some(Circuit::Open {
                probe_at: 104,
                failures: 3
            })
        );
        q.finish(&host, a, Some(5));
        assert_eq!(q.pop_due(103), None, "the open circuit holds the host");
    }

    #[tokio::test]
    async fn an_attempt_that_panics_releases_its_slot_then_reports_it_was_abandoned() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        spawn_attempt(Id(7), Arc::from("h:80"), None, tx, |slot| async move {
            let _held = slot;
            tokio::task::yield_now().await;
            panic!("a bug in an attempt");
        });
        match rx.recv().await {
            Some(Finished::Released { host, report, .. }) => {
                // Its request may have gone out: it keeps its place in the host's rate.
                assert_eq!((&*host, report), ("h:80", HostReport::DROPPED));
            }
            _ => panic!("expected Released first"),
        }
        match rx.recv().await {
            Some(Finished::Abandoned { id, host, panic }) => {
                assert_eq!((id, &*host), (Id(7), "h:80"));
                assert_eq!(panic.as_deref(), Some("a bug in an attempt"));
            }
            _ => panic!("expected Abandoned second"),
        }
        assert!(
            rx.recv().await.is_none(),
            "nothing more, and the senders are gone"
        );
    }

    #[test]
    fn requests_bound_new_attempts_and_records_only_past_a_backlog_of_them() {
        let mut a = Attempts::default();
        a.started();
        a.started();
        assert!(!a.may_start(2), "both request slots are taken");
        a.released();
        assert!(a.may_start(2), "an answered attempt frees its request slot");
        // Answered attempts waiting for the writer hold no slot, up to 4 per slot.
        for _ in 0..7 {
            a.started();
            a.released();
        }
        assert_eq!((a.requests, a.recording), (1, 8));
        assert!(!a.may_start(2), "the writer is behind: wait for it");
        a.recorded();
        assert!(a.may_start(2));
    }

    /// A sender with a bug: every send panics.
    struct Panics;

    #[async_trait::async_trait]
    impl crate::sender::Sender for Panics {
        async fn send(
            &self,
            _: crate::sender::OutgoingRequest,
        ) -> Result<crate::sender::SentResponse, crate::classify::SendError> {
            panic!("a bug in sending (this test's own)");
        }
    }

    /// A scheduler over a fresh store whose sender always panics, with 3 attempts at most,
    /// 10 ms apart; the store and the writer beside it.
    fn panicking_scheduler(
        dir: &std::path::Path,
    ) -> (
        Scheduler,
        crate::store::Store,
        crate::store::writer::WriterHandle,
    ) {
        let file = dir.join("hookrelay.toml");
        std::fs::write(
            &file,
            "[retry]\ninitial_delay = \"10ms\"\nmax_delay = \"10ms\"\nmax_attempts = 3\njitter = 0.0\n",
        )
        .unwrap();
        let config = crate::config::Config::load_with_env(Some(&file), Vec::new()).unwrap();
        let store = crate::store::Store::open(dir).unwrap();
        let (enqueued_tx, enqueued_rx) = mpsc::unbounded_channel();
        let (writer, _) = crate::store::writer::spawn(&store, Metrics::new(), enqueued_tx).unwrap();
        let gate = EndpointGate::new(BTreeSet::new());
        let deliverer = Deliverer::new(
            &config,
            store.clone(),
            writer.clone(),
            Arc::new(Panics),
            Metrics::new(),
            gate.clone(),
        );
        let (_, control_rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler {
            queue: Queue::new(8),
            paused: false,
            control_rx,
            concurrency: 8,
            attempts: Attempts::default(),
            deliverer: Arc::new(deliverer),
            in_flight: InFlight::default(),
            metrics: Metrics::new(),
            enqueued_rx,
            gate,
            host_health: HostHealth::default(),
            backlog: Backlog::default(),
            parked: Parked::default(),
            withdrawn: Default::default(),
        };
        (scheduler, store, writer)
    }

    #[tokio::test]
    async fn a_requeue_after_a_failed_cancel_never_doubles_a_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _store, _writer) = panicking_scheduler(dir.path());
        let requeue = |at| Control::Requeue {
            host: "h:80".into(),
            next_at: at,
            id: Id(7),
        };
        // Back in the queue already, under another due time: still one entry.
        s.queue.push("h:80", 5, Id(7));
        s.control(requeue(9));
        assert_eq!(s.queue.pending(), 1);
        // In flight (dispatched after the withdrawal): not queued beside its own attempt.
        let (id, _) = s.queue.pop_due(10).unwrap();
        s.in_flight.insert(id);
        s.control(requeue(9));
        assert_eq!(s.queue.pending(), 0);
        assert_eq!(s.queue.next_wake(), None, "nothing ready at any time");
    }

    #[tokio::test]
    async fn a_withdrawn_delivery_waits_until_its_cancel_is_stored_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _store, _writer) = panicking_scheduler(dir.path());
        let withdraw = |s: &mut Scheduler, next_at| {
            let (reply, mut rx) = oneshot::channel();
            s.control(Control::Withdraw {
                host: "h:80".into(),
                next_at,
                id: Id(7),
                reply,
            });
            rx.try_recv().unwrap()
        };
        let requeue = |next_at| Control::Requeue {
            host: "h:80".into(),
            next_at,
            id: Id(7),
        };
        // The attempt of the delivery just popped, retried at `next_at`.
        let attempted = |s: &mut Scheduler, next_at| {
            s.in_flight.insert(Id(7));
            s.attempts.started();
            s.attempts.released();
            s.queue.release("h:80", HostReport::NEUTRAL, 0);
            s.recorded(
                Id(7),
                "h:80".into(),
                AttemptResult {
                    next_at: Some(next_at),
                    parked: None,
                },
            );
        };
        // Withdrawn before its `Enqueued` arrived: when it does, nothing is queued (an attempt
        // would go out while the cancel is being stored).
        assert!(withdraw(&mut s, 5));
        s.push("h:80", 5, Id(7));
        assert_eq!(s.queue.pending(), 0);
        assert_eq!(s.queue.next_wake(), None, "nothing ready at any time");
        // The cancel failed: queued once, where the late push put it.
        s.control(requeue(1));
        assert_eq!(s.queue.pending(), 1);
        assert_eq!(s.queue.pop_due(4), None);
        assert_eq!(s.queue.pop_due(5).map(|x| x.0), Some(Id(7)));
        attempted(&mut s, 90);

        // Withdrawn with a stale due time (a retry moved it to 90 since the admin API read
        // it): a failed cancel puts it back at 90, not at the stale time.
        assert!(withdraw(&mut s, 1));
        assert_eq!(s.queue.pending(), 0);
        s.control(requeue(1));
        assert_eq!(s.queue.pop_due(89), None);
        assert_eq!(s.queue.pop_due(90).map(|x| x.0), Some(Id(7)));
        attempted(&mut s, 95);

        // A stored cancel forgets the withdrawal.
        assert!(withdraw(&mut s, 95));
        s.control(Control::Cancelled(Id(7)));
        assert!(s.withdrawn.is_empty());
        assert_eq!(s.queue.pending(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_whose_attempts_always_panic_ends_failed_with_each_one_recorded() {
        use crate::model::Status;

        let dir = tempfile::tempdir().unwrap();
        let (scheduler, store, writer) = panicking_scheduler(dir.path());
        let in_flight = scheduler.in_flight.clone();
        let (drain_tx, drain_rx) = watch::channel(false);
        let running = tokio::spawn(scheduler.run(drain_rx, Duration::from_secs(60)));

        let id = crate::deliver::tests::ingest_one(&writer, None).await;

        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let record = loop {
            let record = store.delivery(id).unwrap().unwrap();
            if record.status != Status::Pending || std::time::Instant::now() > deadline {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(record.status, Status::Failed, "{record:?}");
        let attempts = store.attempts(id).unwrap();
        let seen: Vec<(u32, Classification)> = attempts
            .iter()
            .map(|a| (a.number, a.classification))
            .collect();
        assert_eq!(
            seen,
            [1, 2, 3].map(|n| (n, Classification::InternalError)),
            "one recorded attempt per panic, until the retry budget (3) is spent"
        );
        assert!(attempts[0].error.as_deref().unwrap().contains("bug"));

        // Nothing is left in flight: the drain ends at once, not at its 60 s grace.
        drain_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the drain found nothing in flight")
            .unwrap();
        assert!(in_flight.is_empty());
    }

    /// An abandoned attempt whose recording failed too: its delivery is requeued, later each
    /// time, counted as an INTERNAL_ERROR attempt, and nothing stays in flight or counted.
    #[tokio::test]
    async fn an_unrecorded_abandonment_is_requeued_later_each_time_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _store, _writer) = panicking_scheduler(dir.path());
        let (done_tx, _done_rx) = mpsc::unbounded_channel();
        s.queue.push("h:80", 0, Id(1));
        let mut at = 0;
        for (times, wait) in [(1, 5_000), (2, 10_000)] {
            let (id, host) = s.queue.pop_due(at).expect("due");
            s.in_flight.insert(id);
            s.attempts.started();
            s.finished(
                Finished::Released {
                    host: host.clone(),
                    report: HostReport::NEUTRAL,
                    paced_at: None,
                },
                &done_tx,
            );
            let before = clock::now_ms();
            s.finished(
                Finished::Unrecorded {
                    id,
                    host,
                    panic: None,
                },
                &done_tx,
            );
            assert_eq!((s.attempts.requests, s.attempts.recording), (0, 0));
            assert!(s.in_flight.is_empty());
            assert_eq!(s.queue.pending(), 1);
            assert_eq!(s.attempts.unrecorded.get(&id), Some(&times));
            at = s.queue.next_wake().expect("requeued");
            assert!(
                (before + wait..=clock::now_ms() + wait).contains(&at),
                "due {at}, {wait} ms after {before}"
            );
        }
        let counted = s.metrics.attempts.with_label_values(&["INTERNAL_ERROR"]);
        assert_eq!(counted.get(), 2);
    }

    #[test]
    fn an_unrecorded_delivery_waits_longer_each_time_up_to_an_hour() {
        let waits: Vec<u64> = (1..=12).map(unrecorded_delay_ms).collect();
        assert_eq!(&waits[..4], &[5_000, 10_000, 20_000, 40_000]);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(unrecorded_delay_ms(12), 3_600_000);
        assert_eq!(unrecorded_delay_ms(u32::MAX), 3_600_000);
    }

    #[tokio::test]
    async fn an_attempt_reports_released_then_recorded_with_its_result() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        spawn_attempt(Id(8), Arc::from("h:80"), None, tx, |slot| async move {
            slot.release(HostReport {
                signal: HostSignal::Healthy,
                hold_host_until: None,
                sent: true,
            });
            tokio::task::yield_now().await;
            AttemptResult::default()
        });
        assert!(matches!(
            rx.recv().await,
            Some(Finished::Released { report, .. }) if report.signal == HostSignal::Healthy
        ));
        assert!(matches!(
            rx.recv().await,
            Some(Finished::Recorded { id: Id(8), result, .. }) if result == AttemptResult::default()
        ));
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn completion_with_retry_requeues_and_idle_hosts_are_forgotten() {
        let mut q = Queue::new(8);
        q.push("h:80", 0, Id(1));
        let (id, host) = q.pop_due(0).unwrap();
        q.release(&host, HostReport::NEUTRAL, 0);
        q.finish(&host, id, Some(50));
        assert_eq!(q.next_wake(), Some(50));
        let (id, host) = q.pop_due(50).unwrap();
        q.release(&host, HostReport::NEUTRAL, 0);
        q.finish(&host, id, None);
        assert!(q.hosts.is_empty());
        assert!(q.ready.is_empty());
    }

    #[test]
    fn retry_after_holds_every_delivery_of_the_host() {
        let mut q = Queue::new(8);
        for i in 0..3 {
            q.push("h:80", 0, Id(i));
        }
        q.push("other:80", 0, Id(9));
        let (id, host) = q.pop_due(0).unwrap();
        assert_eq!(&*host, "h:80");
        assert!(
            q.release(
                &host,
                HostReport {
                    signal: HostSignal::Neutral,
                    hold_host_until: Some(1000),
                    sent: true,
                },
                5
            )
            .is_some()
        );
        q.finish(&host, id, Some(1000));
        // The host's other deliveries were due at 0 but wait for the hold; others flow.
        assert_eq!(q.pop_due(999).map(|x| x.0), Some(Id(9)));
        assert_eq!(q.pop_due(999), None);
        assert_eq!(q.next_wake(), Some(1000));
        assert_eq!(q.pop_due(1000).map(|x| x.0), Some(Id(1)));
    }

    #[test]
    fn a_passed_retry_after_hold_on_an_idle_host_is_not_listed() {
        let mut q = Queue::new(8);
        q.push("h:80", 0, Id(1));
        let (id, host) = q.pop_due(0).unwrap();
        q.release(
            &host,
            HostReport {
                signal: HostSignal::Neutral,
                hold_host_until: Some(1000),
                sent: true,
            },
            5,
        );
        q.finish(&host, id, None);
        // Idle but held: listed with its hold until the hold passes.
        let held = q.hosts(999);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].retry_after_until, Some(1000));
        assert!(q.hosts(1000).is_empty());
        // A host with work is listed, without the passed hold.
        q.push("h:80", 0, Id(2));
        assert_eq!(q.pop_due(999), None, "the hold still applies to new work");
        let (id, host) = q.pop_due(1000).unwrap();
        q.release(
            &host,
            HostReport {
                signal: HostSignal::Neutral,
                hold_host_until: Some(2000),
                sent: true,
            },
            1000,
        );
        q.finish(&host, id, Some(3000));
        assert_eq!(q.hosts(1999)[0].retry_after_until, Some(2000));
        let after = q.hosts(2000);
        assert_eq!((after[0].pending, after[0].retry_after_until), (1, None));
        assert_eq!(q.next_wake(), Some(3000));
    }

    #[test]
    fn open_circuit_holds_the_host_and_lets_one_probe_through() {
        let policy = BreakerPolicy {
            threshold: 2,
            probe_interval_ms: 100,
        };
        let mut q = Queue::new(8).with_breaker(policy);
        for i in 0..5 {
            q.push("bad:80", 0, Id(i));
        }
        for now in [1, 2] {
            let (id, host) = q.pop_due(now).unwrap();
            q.release(
                &host,
                HostReport {
                    signal: HostSignal::Failed,
                    hold_host_until: None,
                    sent: true,
                },
                now,
            );
            q.finish(&host, id, Some(now));
        }
        assert_eq!(
            q.circuit("bad:80"),
            Some(Circuit::Open {
                probe_at: 102,
                failures: 2
            })
        );
        // Held: nothing is attempted before the probe time, so no attempt is spent.
        assert_eq!(q.pop_due(101), None);
        let (probe, host) = q.pop_due(102).unwrap();
        assert_eq!(q.circuit("bad:80"), Some(Circuit::HalfOpen { failures: 2 }));
        // Only the probe is in flight.
        assert_eq!(q.pop_due(10_000), None);
        q.release(
            &host,
            HostReport {
                signal: HostSignal::Failed,
                hold_host_until: None,
                sent: true,
            },
            110,
        );
        q.finish(&host, probe, Some(110));
        assert_eq!(
            q.circuit("bad:80"),
            Some(Circuit::Open {
                probe_at: 210,
                failures: 3
            })
        );
        let (probe, host) = q.pop_due(210).unwrap();
        q.release(
            &host,
            HostReport {
                signal: HostSignal::Healthy,
                hold_host_until: None,
                sent: true,
            },
            215,
        );
        q.finish(&host, probe, None);
        assert_eq!(q.circuit("bad:80"), Some(Circuit::Closed { failures: 0 }));
        // Closed again: the rest flow, several at once.
        assert!(q.pop_due(215).is_some());
        assert!(q.pop_due(215).is_some());
    }

    /// Once the store has latched, no attempt starts: its result could not be recorded, so the
    /// receiver would get the same webhook again and again until a restart.
    #[tokio::test]
    async fn no_attempt_starts_once_the_store_has_latched() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _store, writer) = panicking_scheduler(dir.path());
        s.queue.push("h:80", 0, Id(1));
        assert!(s.may_start());
        writer.latch_for_test();
        assert!(!s.may_start());
        assert_eq!(
            s.queue.next_wake(),
            Some(0),
            "still queued, for the restart"
        );
    }

    /// Deliveries held for a disabled endpoint, and one withdrawn for a cancel, move back with
    /// the clock as the queue's do: released or requeued, they are due as they were.
    #[tokio::test]
    async fn held_and_withdrawn_deliveries_move_back_with_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _store, _writer) = panicking_scheduler(dir.path());
        let now = 10_000_000;
        let hour = 3_600_000;
        s.parked.park("gone".into(), Arc::from("x:80"), now, Id(1));
        s.withdrawn.insert(Id(2), (Arc::from("y:80"), now + 5_000));
        s.queue.observe(now);
        s.shift_kept_times();
        assert_eq!(s.parked.remove(Id(1)), Some(now), "no step, no move");
        s.parked.park("gone".into(), Arc::from("x:80"), now, Id(1));
        s.queue.observe(now - hour);
        s.shift_kept_times();
        assert_eq!(s.parked.remove(Id(1)), Some(now - hour));
        assert_eq!(s.withdrawn[&Id(2)].1, now - hour + 5_000);
        s.shift_kept_times();
        assert_eq!(s.withdrawn[&Id(2)].1, now - hour + 5_000, "moved once");
    }

    #[test]
    fn held_deliveries_are_counted_released_by_endpoint_and_merged_into_host_loads() {
        let host = |h: &str| -> Host { Arc::from(h) };
        let mut parked = Parked::default();
        parked.park("a".into(), host("x:80"), 5, Id(1));
        parked.park("a".into(), host("y:80"), 5, Id(2));
        parked.park("b".into(), host("x:80"), 5, Id(3));
        assert_eq!(parked.len(), 3);

        // Merged into a queued host's row, and a row of its own for a host with nothing else.
        let mut q = Queue::new(8);
        q.push("x:80", 9, Id(4));
        let mut loads = q.hosts(0);
        parked.add_to(&mut loads, &RateLimits::default());
        let rows: Vec<_> = loads
            .iter()
            .map(|l| {
                (
                    l.host.as_str(),
                    l.pending,
                    l.held_for_disabled_endpoint,
                    l.next_at,
                )
            })
            .collect();
        assert_eq!(rows, vec![("x:80", 3, 2, Some(9)), ("y:80", 1, 1, None)]);

        // A cancel forgets one; an unknown id is not held.
        assert!(parked.remove(Id(2)).is_some());
        assert!(parked.remove(Id(2)).is_none());
        assert_eq!(parked.len(), 2);
        assert_eq!(parked.by_endpoint["a"].len(), 1);

        // Enabling `a` releases only its deliveries.
        let disabled: BTreeSet<String> = ["b".to_string()].into();
        let released = parked.release(&disabled);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].0, "a");
        assert_eq!(
            released[0].1.iter().map(|h| h.2).collect::<Vec<_>>(),
            vec![Id(1)]
        );
        assert_eq!(parked.len(), 1);
        assert!(parked.release(&disabled).is_empty());
        assert_eq!(parked.release(&BTreeSet::new()).len(), 1);
        assert_eq!(parked.len(), 0);
        assert!(parked.by_endpoint.is_empty());
    }
}
