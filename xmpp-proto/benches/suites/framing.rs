//! The framer and what can be done with each frame, without the stream state machine.
//!
//! Each iteration starts a fresh [`Framer`] (a few words, nothing allocated), pushes the stream
//! header, then pushes the workload in 4 KiB reads and takes every frame after each read.

use std::hint::black_box;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Throughput};
use tern_xmpp_proto::element::check_well_formed;
use tern_xmpp_proto::{Element, Frame, Framer, Limits, Stanza, StanzaKind, ns};

use super::workload::{HEADER, Workload};

/// One way of consuming the workload; returns how many stanzas it fully handled.
type Pipeline = fn(&Workload) -> usize;

/// Frames the workload and hands each stanza frame to `each`; returns how many there were.
fn frame_all(workload: &Workload, mut each: impl FnMut(Bytes)) -> usize {
    let mut framer = Framer::new(Limits::default());
    framer.push(HEADER);
    match framer.next_frame() {
        Ok(Some(Frame::Header(_))) => {}
        other => panic!("the stream header does not frame: {other:?}"),
    }
    let mut count = 0;
    for chunk in workload.chunks() {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Element(frame))) => {
                    count += 1;
                    each(frame);
                }
                Ok(None) => break,
                other => panic!("unexpected frame in the workload: {other:?}"),
            }
        }
    }
    count
}

/// Framing only.
fn framing(workload: &Workload) -> usize {
    frame_all(workload, |frame| {
        black_box(frame);
    })
}

/// Framing plus the envelope of every stanza; returns how many messages were read.
fn framing_envelope(workload: &Workload) -> usize {
    let mut messages = 0;
    frame_all(workload, |frame| match Stanza::from_frame(frame) {
        Ok(stanza) => {
            messages += usize::from(stanza.kind == StanzaKind::Message && stanza.to().is_some());
            black_box(stanza);
        }
        Err(e) => panic!("a workload stanza has no envelope: {e}"),
    });
    messages
}

/// Framing, the quick-xml well-formedness pass (on every stanza before the framer checked
/// well-formedness itself), and the envelope; returns how many messages were read.
fn framing_check_envelope(workload: &Workload) -> usize {
    let mut messages = 0;
    frame_all(workload, |frame| {
        if let Err(e) = check_well_formed(&frame, ns::CLIENT) {
            panic!("a workload stanza is not well-formed: {e}");
        }
        match Stanza::from_frame(frame) {
            Ok(stanza) => {
                messages += usize::from(stanza.kind == StanzaKind::Message);
                black_box(stanza);
            }
            Err(e) => panic!("a workload stanza has no envelope: {e}"),
        }
    });
    messages
}

/// Framing plus the full element tree of every stanza; returns how many bodies were found.
fn framing_element(workload: &Workload) -> usize {
    let mut bodies = 0;
    frame_all(workload, |frame| match Element::parse(&frame, ns::CLIENT) {
        Ok(element) => {
            bodies += usize::from(element.get_child("body", ns::CLIENT).is_some());
            black_box(element);
        }
        Err(e) => panic!("a workload stanza does not parse: {e}"),
    });
    bodies
}

/// Registers the framing benchmarks in `group`.
pub(crate) fn bench(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload) {
    let pipelines: [(&str, Pipeline); 4] = [
        ("framing", framing),
        ("framing+envelope", framing_envelope),
        ("framing+check+envelope", framing_check_envelope),
        ("element parse", framing_element),
    ];
    group.throughput(Throughput::Elements(workload.count as u64));
    for (name, pipeline) in pipelines {
        let seen = pipeline(workload);
        assert_eq!(
            seen, workload.count,
            "{name} must see every stanza of the workload"
        );
        group.bench_function(name, |b| b.iter(|| pipeline(black_box(workload))));
    }
}
