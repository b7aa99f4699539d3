//! The wire codec on cohort's own traffic: the protocol messages (`Msg`), a small-argument call
//! tuple, and an 8 MiB `Vec<f64>` both as a whole value (the raw path: encoding borrows the
//! vector, decoding is one copy) and inside an argument tuple (through the codec), encoded and
//! decoded; the encoded sizes first.
//!
//! `cargo bench -p cohort-core --bench codec`. The comparison with bincode 1, bitcode and
//! postcard's own `to_extend` that chose the codec is in docs/ARCHITECTURE.md (decision 10).
use cohort_core::__private::{sample_messages, SampleMsg};
use cohort_core::codec;
use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// A typical small call's argument tuple: an index, a parameter and a name.
type CallArgs = (u64, f64, String);

fn call_args() -> CallArgs {
    (42, 0.25, "temperature".into())
}

fn messages(c: &mut Criterion, msgs: &[(&str, SampleMsg)]) {
    let mut enc = c.benchmark_group("encode");
    for (name, m) in msgs {
        enc.bench_function(BenchmarkId::new("msg", name), |b| {
            b.iter(|| black_box(m).encode())
        });
    }
    let args = call_args();
    enc.bench_function("call_args", |b| {
        b.iter(|| codec::encode_vec(black_box(&args)).unwrap())
    });
    enc.finish();
    let mut dec = c.benchmark_group("decode");
    for (name, m) in msgs {
        let b0 = m.encode();
        dec.bench_function(BenchmarkId::new("msg", name), |b| {
            b.iter(|| SampleMsg::decode(black_box(&b0)).unwrap())
        });
    }
    let b0 = codec::encode_vec(&args).unwrap();
    dec.bench_function("call_args", |b| {
        b.iter(|| codec::decode::<CallArgs>(black_box(&b0)).unwrap())
    });
    dec.finish();
}

fn vectors(c: &mut Criterion) {
    let v: Vec<f64> = (0..1usize << 20).map(|i| i as f64 * 0.5).collect();
    let bytes = v.len() as u64 * 8;
    let mut enc = c.benchmark_group("encode");
    enc.throughput(Throughput::Bytes(bytes));
    enc.bench_function("vec_f64_8MiB_raw", |b| {
        b.iter(|| codec::encode(black_box(&v)).unwrap().len())
    });
    let tuple = (v,);
    enc.bench_function("vec_f64_8MiB_in_tuple", |b| {
        b.iter(|| codec::encode_vec(black_box(&tuple)).unwrap())
    });
    enc.finish();
    let (v,) = tuple;
    let mut dec = c.benchmark_group("decode");
    dec.throughput(Throughput::Bytes(bytes));
    let raw = codec::encode_vec(&v).unwrap();
    dec.bench_function("vec_f64_8MiB_raw", |b| {
        b.iter(|| codec::decode::<Vec<f64>>(black_box(&raw)).unwrap())
    });
    let in_tuple = codec::encode_vec(&(v,)).unwrap();
    dec.bench_function("vec_f64_8MiB_in_tuple", |b| {
        b.iter(|| codec::decode::<(Vec<f64>,)>(black_box(&in_tuple)).unwrap())
    });
    dec.finish();
}

fn main() {
    let msgs = sample_messages();
    println!("encoded bytes");
    for (name, m) in &msgs {
        println!("  {name:<12} {:>5}", m.encode().len());
    }
    println!(
        "  {:<12} {:>5}\n",
        "call_args",
        codec::encode_vec(&call_args()).unwrap().len()
    );
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    messages(&mut c, &msgs);
    vectors(&mut c);
    c.final_summary();
}
