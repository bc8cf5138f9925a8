//! Real browsers as clients: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) and Firefox ESR (`firefox-esr`, driven by `geckodriver`, built by
//! `ci/install-geckodriver.sh`), both through WebDriver with `fantoccini`.
//!
//! - [`driver`]: starts a WebDriver server and a browser session; both go when dropped.
//! - [`recorder`]: a script put into the page that opens the browser's own `EventSource`s
//!   and records what each saw (`open`, `error`, events with ids, data and types, each
//!   with its time), and its conversion into the oracle's records.
//! - [`pages`]: checks that an HTML run report renders, and the README's screenshots.
//!
//! WebDriver rather than CDP: one protocol (and one client) drives both engines, and
//! `fantoccini` needs only hyper, which the crate already has.

pub mod driver;
pub mod pages;
pub mod recorder;
