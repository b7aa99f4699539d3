//! `cohort`: runs a cohort program with local, SSH or Slurm workers (`cohort --help`).

fn main() {
    std::process::exit(cohort_launcher::cli::run(std::env::args_os().skip(1)));
}
