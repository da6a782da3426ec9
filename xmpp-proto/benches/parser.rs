//! The stream parser benchmark (`cargo bench -p tern-xmpp-proto --bench parser`).
//!
//! One criterion `main` calling the suites in `benches/suites/` (STYLE.md §10). Every benchmark
//! feeds the same workload, [`suites::workload::Workload`] (10,000 typical 1:1 chat messages
//! after a stream header, in 4 KiB reads), and reports throughput in stanzas per second:
//!
//! - `parser/framing`: [`Framer`](tern_xmpp_proto::Framer) only, counting frames.
//! - `parser/framing+envelope`: the same plus `Stanza::from_frame` on each frame.
//! - `parser/framing+check+envelope`: plus `check_well_formed`, the quick-xml pass the
//!   established stream ran on every stanza before the framer checked well-formedness itself
//!   (now it runs only for stanzas with namespace prefixes or CDATA); kept as a reference.
//! - `parser/element parse`: framing plus the full tree (`Element::parse`), for comparison.
//! - `parser/established stream`: the server's real per-stanza path, a `ServerStream` in the
//!   established state fed through `handle_input` with `poll_event` drained.
//!
//! Before measuring, each pipeline is run once and checked to yield exactly the workload's
//! stanzas, so a benchmark that silently does less work fails loudly instead.
//!
//! Issue target: at least 1,000,000 such messages per second on one core.

mod suites;

use criterion::{Criterion, criterion_group, criterion_main};

fn parser(c: &mut Criterion) {
    let workload = suites::workload::Workload::chat(suites::workload::MESSAGES);
    eprintln!(
        "workload: {} messages, {} bytes, {}-{} bytes each, fed in {}-byte reads",
        workload.count,
        workload.stanzas.len(),
        workload.size_range.0,
        workload.size_range.1,
        suites::workload::CHUNK,
    );
    let mut group = c.benchmark_group("parser");
    suites::framing::bench(&mut group, &workload);
    suites::stream::bench(&mut group, &workload);
    group.finish();
}

criterion_group!(benches, parser);
criterion_main!(benches);
