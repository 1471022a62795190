//! Panics of the code under test become violations. tokio catches a panicking task and the
//! run goes on, so a panic inside an actor or a Raft core would otherwise pass unnoticed: a
//! process-wide hook keeps the messages of panics on simulation threads (and prints them
//! only there where nobody collects them).

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static CAUGHT: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs the hook once per process; panics elsewhere still reach the previous hook.
pub fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let kept = CAUGHT
                .try_with(|caught| match caught.borrow_mut().as_mut() {
                    Some(list) => {
                        list.push(info.to_string().replace('\n', " "));
                        true
                    }
                    None => false,
                })
                .unwrap_or(false);
            if !kept {
                previous(info);
            }
        }));
    });
}

/// From now on, panics on this thread are collected.
pub fn capture() {
    CAUGHT.with(|caught| *caught.borrow_mut() = Some(Vec::new()));
}

/// The panics collected on this thread since [`capture`]; collecting stops.
pub fn take() -> Vec<String> {
    CAUGHT
        .try_with(|caught| caught.borrow_mut().take().unwrap_or_default())
        .unwrap_or_default()
}
