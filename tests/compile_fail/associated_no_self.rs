// An associated function whose signature does not name `Self`: still refused, with the
// reason.
struct Math;

impl Math {
    #[cohort::remote]
    fn double(x: u64) -> u64 {
        2 * x
    }
}

fn main() {
    let _ = Math::double(1);
}
