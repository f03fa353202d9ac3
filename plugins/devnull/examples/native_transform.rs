//! The devnull destination's `transform`, run natively: the baseline against which `sluice
//! bench` measures what the component boundary adds per call (the same Rust code, once
//! compiled for wasm32-wasip2 and called through wasmtime, once called directly).
//!
//! Usage: `native_transform EVENT_FILE REPEAT`; prints nanoseconds per call.

use std::hint::black_box;
use std::time::Instant;

use sluice_plugin_devnull::Devnull;
use sluice_sdk::Destination;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: native_transform EVENT_FILE REPEAT";
    let event = std::fs::read_to_string(args.next().ok_or(usage)?)?;
    let repeat: u32 = args.next().ok_or(usage)?.parse()?;
    let destination = sluice_sdk::testing::configure::<Devnull>("{}")?;
    let context = sluice_sdk::testing::job_context(1);
    // Warm up caches and the allocator, as the guest measurement does.
    for _ in 0..repeat.min(1000) {
        black_box(destination.transform_json(&context, black_box(&event)))?;
    }
    let started = Instant::now();
    for _ in 0..repeat.max(1) {
        black_box(destination.transform_json(&context, black_box(&event)))?;
    }
    let per_call = started.elapsed().as_nanos() as f64 / f64::from(repeat.max(1));
    println!("{per_call:.1}");
    Ok(())
}
