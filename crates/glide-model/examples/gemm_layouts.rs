//! GFLOP/s of the `gemm` crate (as `conv_im2col.rs` calls it, one thread) for the operand layouts
//! a training convolution can use, at the emoji UNet's layer sizes. The numbers behind the
//! layouts chosen in `conv_im2col.rs` (docs/bench/2026-12-08/baseline.md).
//!
//! `cargo run --release -p glide-model --example gemm_layouts`

use std::time::Instant;

/// GFLOP/s of dst[m, n] = lhs[m, k] · rhs[k, n] (dst row-major), lhs and rhs given by
/// (row stride, column stride).
fn gflops((m, n, k): (usize, usize, usize), lhs: (usize, usize), rhs: (usize, usize)) -> f64 {
    let (a, b) = (vec![1.0f32; m * k], vec![1.0f32; k * n]);
    let mut c = vec![0.0f32; m * n];
    let mut run = || unsafe {
        // SAFETY: the strides address only elements inside a, b and c (each holds m·k, k·n, m·n).
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            lhs.1 as isize,
            lhs.0 as isize,
            b.as_ptr(),
            rhs.1 as isize,
            rhs.0 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    };
    (0..3).for_each(|_| run());
    let (start, mut runs) = (Instant::now(), 0);
    while start.elapsed().as_secs_f64() < 0.3 {
        run();
        runs += 1;
    }
    2.0 * (m * n * k) as f64 * runs as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    println!(
        "| O | C | H·W | forward colᵀ·W′ᵀ | dW: g·col (transposed view) | dW: g·colᵀ (patch rows) | dX: W′ᵀ·g |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (o, c, hw) in [
        (32, 32, 1024),
        (32, 96, 1024),
        (64, 64, 1024),
        (64, 64, 256),
        (64, 128, 64),
    ] {
        let kkc = 9 * c;
        let forward = gflops((hw, o, kkc), (kkc, 1), (1, kkc));
        let dw_view = gflops((o, kkc, hw), (hw, 1), (1, hw));
        let dw_rows = gflops((o, kkc, hw), (hw, 1), (kkc, 1));
        let dx = gflops((kkc, hw, o), (1, kkc), (hw, 1));
        println!("| {o} | {c} | {hw} | {forward:.0} | {dw_view:.0} | {dw_rows:.0} | {dx:.0} |");
    }
}
