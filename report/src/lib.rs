//! `sse-report`: self-contained HTML reports of chaos runs. A report is data (a verdict,
//! facts such as the seed and the replay command, then sections); [`Report::to_html`]
//! writes one HTML file with inline SVG charts and inline CSS: no JavaScript, no
//! external assets, readable offline and in any browser.
//!
//! - [`chart`]: time-series charts with shaded fault windows and marked points, and
//!   histograms, drawn with `plotters`' SVG backend.
//! - [`html`]: the document: verdict and failures on top, the facts, the sections.
//! - [`swarm`]: a swarm's report: a seed table and the recovery-time distribution.
//!
//! It knows nothing of plans or servers: the tiers turn their outcomes into a [`Report`]
//! (`sse-chaos` for real runs, `sse-simulations` for its swarm).

pub mod chart;
pub mod html;
pub mod swarm;

pub use chart::{Chart, Series};
pub use html::{Report, Section};
pub use swarm::SwarmRow;
