//! Metric names (SPEC §8), emitted through the `metrics` facade; the binary installs
//! the Prometheus exporter. Labels are low-cardinality: never a user or an address.

/// Counter: requests answered or dropped after evaluation, by `door` and `result`
/// (`accept`, `reject`, `challenge`, `drop`, `status_ok`).
pub const REQUESTS: &str = "otpgate_requests_total";
/// Histogram: time from receipt to decision (reject delay excluded), by `door` and
/// `result`, in seconds.
pub const DURATION: &str = "otpgate_request_duration_seconds";
/// Counter: datagrams and requests dropped without a reply, by `reason`: the
/// verification failure's kind (`message_authenticator_missing`, `too_short`, …),
/// `unknown_client`, `duplicate_in_progress`, `duplicate_cache_full`, `overload`,
/// `timeout`, `backend`, `unhealthy`, `error`, `encode_error`, `reject_queue_full`.
pub const DROPPED: &str = "otpgate_radius_dropped_total";
/// Counter: retransmissions, by `outcome` (`resent` from the cache, `in_progress`).
pub const DUPLICATES: &str = "otpgate_radius_duplicates_total";
/// Counter: answered requests evicted from a full duplicate cache before their TTL
/// (their reply kept at least a third of it) to make room for new ones.
pub const DEDUP_EVICTED: &str = "otpgate_radius_dedup_evicted_total";
/// Counter: backend failures that made a request fail closed, by `door` and `backend`
/// (`directory`, `store`, `mail`).
pub const BACKEND_ERRORS: &str = "otpgate_backend_errors_total";
/// Counter: requests answered later than `request_timeout` (a slow backend; the reply
/// was still sent and cached).
pub const LATE: &str = "otpgate_radius_late_total";
/// Gauge: requests being evaluated now.
pub const IN_FLIGHT: &str = "otpgate_radius_in_flight";

/// Registers the descriptions (shown as `# HELP`).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Requests evaluated, by door and result.");
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Time from receipt to decision, by door and result (reject delay excluded)."
    );
    describe_counter!(
        DROPPED,
        "RADIUS datagrams dropped without a reply, by reason."
    );
    describe_counter!(DUPLICATES, "RADIUS retransmissions, by outcome.");
    describe_counter!(
        DEDUP_EVICTED,
        "Answered RADIUS requests evicted early from a full duplicate cache."
    );
    describe_counter!(
        LATE,
        "RADIUS requests answered after request_timeout (a slow backend)."
    );
    describe_counter!(
        BACKEND_ERRORS,
        "Backend failures that made a request fail closed, by door and backend."
    );
    describe_gauge!(IN_FLIGHT, "RADIUS requests being evaluated now.");
}
