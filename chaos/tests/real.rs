//! The real chaos tier in its short setting: the `sse-server` binary behind a real
//! Toxiproxy (installed by `ci/install-toxiproxy.sh`, or `TOXIPROXY_URL`), each fault read
//! back from the API, the oracle and the leak checks at the end. `CHAOS_SEED` pins the
//! seed; otherwise each scenario has a fixed one.

use sse_chaos::real::scenarios::{self, Settings};

async fn scenario(name: &str, seed: u64) {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed);
    let report = scenarios::run(name, &Settings::short(seed))
        .await
        .unwrap_or_else(|error| panic!("{name} (seed {seed}) could not run: {error:#}"));
    println!("{report}");
    assert!(report.passed(), "{report}replay: cargo run -p sse-chaos -- run {name} --seed {seed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_jitter_keep_order_and_completeness() {
    scenario("latency", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sliced_across_reads_still_parse() {
    scenario("slicer", 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_behind_a_bandwidth_limit_do_not_drag_down_the_others_and_catch_up() {
    scenario("bandwidth", 13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_close_slowly_are_still_freed_within_the_bound() {
    scenario("slow_close", 14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_event_is_not_dispatched_and_resumes_from_the_last_whole_event() {
    scenario("limit_data", 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_clients_resume_with_last_event_id_and_lose_nothing() {
    scenario("reset_peer", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_storm_of_a_thousand_streams_recovers_without_loss() {
    scenario("storm", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_is_noticed_by_heartbeat_silence_and_the_server_frees_dead_streams() {
    scenario("blackhole", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_by_the_write_timeout_and_others_get_everything() {
    scenario("stalled_reader", 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_open_file_limit_is_refused_cleanly_and_the_server_recovers() {
    scenario("fd_exhaustion", 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_hits_the_buffer_budget_not_the_oom_killer() {
    scenario("memory_pressure", 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_resumes_after_sigcont_and_clients_lose_nothing() {
    scenario("sigstop", 9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_stream_and_clients_resume_after_the_restart() {
    scenario("sigterm", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledged_publishes_loses_nothing() {
    scenario("sigkill", 5).await;
}
