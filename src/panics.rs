//! Panics: a bug in hookrelay, never an expected path. What this module makes sure of is that
//! one is seen where an operator looks: in the structured log (see [`install_hook`]) and, for a
//! delivery attempt, in the attempt's record (see [`CatchUnwind`]).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Longest panic message kept (in characters); a record or a log line stays small whatever
/// the panic said.
const MAX_MESSAGE_CHARS: usize = 500;

/// The message a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
pub fn message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "a panic without a message"
    };
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Replaces the default panic hook (a plain line on stderr) with an ERROR event in the log,
/// with the thread, the source location and, when `RUST_BACKTRACE` asks for one, the backtrace.
/// If the log's filter drops that event (`log.level = "off"`), the default hook still prints
/// it, so no panic goes unseen. Unwinding is unchanged: the task or thread that panicked ends
/// as before.
pub fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !tracing::enabled!(tracing::Level::ERROR) {
            return default(info);
        }
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = thread.name().unwrap_or("<unnamed>");
        let message = message(info.payload());
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(
                thread,
                location,
                "panicked (a bug in hookrelay: please report it): {message}\n{backtrace}"
            );
        } else {
            tracing::error!(
                thread,
                location,
                "panicked (a bug in hookrelay: please report it): {message}"
            );
        }
    }));
}

/// Runs a future and turns a panic inside it into `Err(message)`, dropping the future at once
/// (so what it holds is released before the caller hears of the panic).
pub struct CatchUnwind<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> CatchUnwind<F> {
    pub fn new(inner: F) -> Self {
        CatchUnwind {
            inner: Some(Box::pin(inner)),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            panic!("CatchUnwind polled after it completed");
        };
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                self.inner = None;
                Poll::Ready(Ok(output))
            }
            Err(payload) => {
                // Dropped here, before the caller learns of the panic. (A panic while dropping
                // it unwinds through the caller, as any panic would without this wrapper.)
                self.inner = None;
                Poll::Ready(Err(message(payload.as_ref())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_the_panics_text_bounded() {
        assert_eq!(message(&"static text"), "static text");
        assert_eq!(message(&String::from("formatted 7")), "formatted 7");
        assert_eq!(message(&42u32), "a panic without a message");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let cut = message(&long);
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(
            message(&"é".repeat(MAX_MESSAGE_CHARS)).chars().count(),
            MAX_MESSAGE_CHARS
        );
    }

    #[tokio::test]
    async fn a_panic_inside_becomes_its_message_and_drops_the_future_first() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = Flag(dropped.clone());
        let result = CatchUnwind::new(async move {
            let _held = held;
            tokio::task::yield_now().await;
            if true {
                panic!("boom {}", 7);
            }
            1
        })
        .await;
        assert_eq!(result, Err("boom 7".to_string()));
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(CatchUnwind::new(async { 5 }).await, Ok(5));
    }
}
