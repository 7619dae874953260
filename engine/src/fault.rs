//! Faults injected on purpose, to test how the gateway survives its own bugs (like FoundationDB's
//! `BUGGIFY`, much smaller). Debug builds only: in release builds every check is `false` and the
//! code is gone. Armed by the environment: with `PORTCULLIS_FAULTS=panic`, a tunnel to a target
//! whose name starts with `fault-panic` panics right after its upgrade.

/// Whether a tunnel to `target` should panic now.
#[cfg(debug_assertions)]
pub fn panic_in_tunnel(target: &str) -> bool {
    static ARMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let armed = *ARMED.get_or_init(|| std::env::var_os("PORTCULLIS_FAULTS").is_some_and(|v| v == "panic"));
    armed && target.starts_with("fault-panic")
}

#[cfg(not(debug_assertions))]
pub fn panic_in_tunnel(_: &str) -> bool {
    false
}
