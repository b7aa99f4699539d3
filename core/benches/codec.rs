//! The wire codec on cohort's own traffic, beside the other serde codecs, in one run: the
//! protocol messages (`Msg`), a small-argument call tuple and an 8 MiB `Vec<f64>` (which
//! cohort sends on its raw path, not copied), encoded and decoded by each codec; then the
//! encoded sizes and, for a 24-byte input whose length prefix claims 2^32 elements, the largest
//! single allocation each decoder makes before it fails.
//!
//! `cargo bench -p cohort-core --bench codec`
use cohort_core::__private::{sample_messages, SampleMsg};
use cohort_core::codec;
use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Records the largest single allocation while `COUNTING` is set.
struct Peak;
static COUNTING: AtomicBool = AtomicBool::new(false);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            PEAK.fetch_max(l.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            PEAK.fetch_max(n, Ordering::Relaxed);
        }
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

/// One codec under test, through serde.
trait Codec {
    const NAME: &'static str;
    fn encode<T: Serialize>(out: &mut Vec<u8>, v: &T);
    fn decode<T: DeserializeOwned>(b: &[u8]) -> Option<T>;
}

struct Bincode1;
impl Codec for Bincode1 {
    const NAME: &'static str = "bincode1";
    fn encode<T: Serialize>(out: &mut Vec<u8>, v: &T) {
        use bincode::Options;
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .serialize_into(out, v)
            .unwrap()
    }
    fn decode<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
        use bincode::Options;
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .reject_trailing_bytes()
            .deserialize(b)
            .ok()
    }
}

struct Postcard;
impl Codec for Postcard {
    const NAME: &'static str = "postcard";
    fn encode<T: Serialize>(out: &mut Vec<u8>, v: &T) {
        *out = postcard::to_extend(v, std::mem::take(out)).unwrap();
    }
    fn decode<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
        match postcard::take_from_bytes(b) {
            Ok((v, [])) => Some(v),
            _ => None,
        }
    }
}

/// postcard writing into the vector directly (its `to_extend` pushes byte by byte).
struct PostcardAppend;
struct Append<'a>(&'a mut Vec<u8>);
impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, d: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(d);
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
impl Codec for PostcardAppend {
    const NAME: &'static str = "postcard_append";
    fn encode<T: Serialize>(out: &mut Vec<u8>, v: &T) {
        postcard::serialize_with_flavor(v, Append(out)).unwrap()
    }
    fn decode<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
        Postcard::decode(b)
    }
}

struct Bitcode;
impl Codec for Bitcode {
    const NAME: &'static str = "bitcode";
    fn encode<T: Serialize>(out: &mut Vec<u8>, v: &T) {
        out.extend_from_slice(&bitcode::serialize(v).unwrap());
    }
    fn decode<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
        bitcode::deserialize(b).ok()
    }
}

/// A typical small call's argument tuple: an index, a parameter and a name.
type CallArgs = (u64, f64, String);

fn call_args() -> CallArgs {
    (42, 0.25, "temperature".into())
}

fn big_vec() -> Vec<f64> {
    (0..1usize << 20).map(|i| i as f64 * 0.5).collect()
}

fn per_codec<C: Codec>(c: &mut Criterion, msgs: &[(&str, SampleMsg)], v: &[f64]) {
    let mut enc = c.benchmark_group("encode");
    let mut out = Vec::with_capacity(v.len() * 8 + 16);
    for (name, m) in msgs {
        enc.bench_function(BenchmarkId::new(C::NAME, name), |b| {
            b.iter(|| {
                out.clear();
                C::encode(&mut out, black_box(m));
            })
        });
    }
    let args = call_args();
    enc.bench_function(BenchmarkId::new(C::NAME, "call_args"), |b| {
        b.iter(|| {
            out.clear();
            C::encode(&mut out, black_box(&args));
        })
    });
    enc.throughput(Throughput::Bytes(v.len() as u64 * 8));
    enc.bench_function(BenchmarkId::new(C::NAME, "vec_f64_8MiB"), |b| {
        b.iter(|| {
            out.clear();
            C::encode(&mut out, black_box(&v));
        })
    });
    enc.finish();

    let mut dec = c.benchmark_group("decode");
    for (name, m) in msgs {
        let mut b0 = Vec::new();
        C::encode(&mut b0, m);
        dec.bench_function(BenchmarkId::new(C::NAME, name), |b| {
            b.iter(|| C::decode::<SampleMsg>(black_box(&b0)).unwrap())
        });
    }
    let mut b0 = Vec::new();
    C::encode(&mut b0, &args);
    dec.bench_function(BenchmarkId::new(C::NAME, "call_args"), |b| {
        b.iter(|| C::decode::<CallArgs>(black_box(&b0)).unwrap())
    });
    let mut b0 = Vec::new();
    C::encode(&mut b0, &v);
    dec.throughput(Throughput::Bytes(v.len() as u64 * 8));
    dec.bench_function(BenchmarkId::new(C::NAME, "vec_f64_8MiB"), |b| {
        b.iter(|| C::decode::<Vec<f64>>(black_box(&b0)).unwrap())
    });
    dec.finish();
}

/// cohort's own codec as the runtime calls it: messages through the configured codec, the
/// vector on its raw path (encoding borrows the vector; decoding is one copy).
fn cohort(c: &mut Criterion, msgs: &[(&str, SampleMsg)], v: &[f64]) {
    let v = v.to_vec();
    let mut enc = c.benchmark_group("encode");
    for (name, m) in msgs {
        enc.bench_function(BenchmarkId::new("cohort", name), |b| {
            b.iter(|| black_box(m).encode())
        });
    }
    enc.throughput(Throughput::Bytes(v.len() as u64 * 8));
    enc.bench_function(BenchmarkId::new("cohort_raw", "vec_f64_8MiB"), |b| {
        b.iter(|| codec::encode(black_box(&v)).unwrap().len())
    });
    enc.finish();
    let mut dec = c.benchmark_group("decode");
    for (name, m) in msgs {
        let b0 = m.encode();
        dec.bench_function(BenchmarkId::new("cohort", name), |b| {
            b.iter(|| SampleMsg::decode(black_box(&b0)).unwrap())
        });
    }
    let b0 = codec::encode_vec(&v).unwrap();
    dec.throughput(Throughput::Bytes(v.len() as u64 * 8));
    dec.bench_function(BenchmarkId::new("cohort_raw", "vec_f64_8MiB"), |b| {
        b.iter(|| codec::decode::<Vec<f64>>(black_box(&b0)).unwrap())
    });
    dec.finish();
}

fn sizes<C: Codec>(msgs: &[(&str, SampleMsg)]) {
    let mut line = format!("{:<10}", C::NAME);
    for (_, m) in msgs {
        let mut b = Vec::new();
        C::encode(&mut b, m);
        line += &format!(" {:>9}", b.len());
    }
    let mut b = Vec::new();
    C::encode(&mut b, &call_args());
    line += &format!(" {:>9}", b.len());
    println!("{line}");
}

/// The largest allocation while decoding `input` as `T` (which must fail).
fn peak<C: Codec, T: DeserializeOwned>(input: &[u8]) -> usize {
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let r = C::decode::<T>(input);
    COUNTING.store(false, Ordering::Relaxed);
    assert!(r.is_none(), "{}: a 24-byte input decoded", C::NAME);
    drop(r);
    PEAK.load(Ordering::Relaxed)
}

fn hostile<C: Codec>() {
    // The codec's own length prefix for 2^32 elements, from a vector of units (no memory).
    let mut input = Vec::new();
    C::encode(&mut input, &vec![(); 1usize << 32]);
    assert!(input.len() <= 24);
    input.resize(24, 1);
    println!(
        "{:<10} {:>11} {:>11} {:>11} {:>11} {:>11} {:>16}",
        C::NAME,
        peak::<C, Vec<u64>>(&input),
        peak::<C, Vec<u8>>(&input),
        peak::<C, String>(&input),
        peak::<C, Vec<String>>(&input),
        peak::<C, Vec<Vec<u64>>>(&input),
        peak::<C, std::collections::HashMap<u64, u64>>(&input),
    );
}

fn main() {
    let msgs = sample_messages();
    let names: Vec<&str> = msgs.iter().map(|(n, _)| *n).collect();
    println!("encoded bytes");
    let mut head = format!("{:<10}", "");
    for n in names.iter().chain(&["call_args"]) {
        head += &format!(" {n:>9}");
    }
    println!("{head}");
    sizes::<Bincode1>(&msgs);
    sizes::<Postcard>(&msgs);
    sizes::<Bitcode>(&msgs);
    println!("\nlargest allocation decoding 24 bytes that claim 2^32 elements (bytes)");
    println!(
        "{:<10} {:>11} {:>11} {:>11} {:>11} {:>11} {:>16}",
        "", "Vec<u64>", "Vec<u8>", "String", "Vec<String>", "Vec<Vec<u64>>", "HashMap<u64,u64>"
    );
    hostile::<Bincode1>();
    hostile::<Postcard>();
    hostile::<Bitcode>();
    println!();

    let v = big_vec();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let c = &mut c;
    cohort(c, &msgs, &v);
    per_codec::<Bincode1>(c, &msgs, &v);
    per_codec::<Postcard>(c, &msgs, &v);
    per_codec::<PostcardAppend>(c, &msgs, &v);
    per_codec::<Bitcode>(c, &msgs, &v);
    c.final_summary();
}
