//! Builds the emoji dataset and prints its summary as json.
//!
//! `cargo run --release -p glide-data --example build_emoji -- OUT [SEED] [LIMIT]`
//! (reads `node_modules` in the current folder; `glide data emoji` is the same with flags).

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        return Err("give the output folder: build_emoji OUT [SEED] [LIMIT]".into());
    };
    let mut opts = glide_data::EmojiOptions::new("node_modules", out);
    if let Some(seed) = args.next() {
        opts.seed = seed
            .parse()
            .map_err(|_| "the seed must be a whole number")?;
    }
    if let Some(limit) = args.next() {
        opts.limit = Some(
            limit
                .parse()
                .map_err(|_| "the limit must be a whole number")?,
        );
    }
    let start = Instant::now();
    let summary = glide_data::build(&opts)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!("built in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
