// #[cohort::remote] works on free functions; on an associated function it says so.
struct Counter(u64);

impl Counter {
    #[cohort::remote]
    fn start(n: u64) -> Self {
        Counter(n)
    }
}

fn main() {
    let _ = Counter::start(1).0;
}
