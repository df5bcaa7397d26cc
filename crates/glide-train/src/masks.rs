//! Training masks for the inpainting fine-tune (GLIDE §4: "random regions of training examples are
//! erased"): a mix of rectangles, free-form brush strokes (as in LaMa and DeepFill v2), outpainting
//! bands at the borders, and 10% where everything is regenerated (plain generation). Never
//! all-keep. Masks use the model's convention: 1 = keep.

use rand::Rng;

/// Which family a mask was drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// Regenerate everything (the model's text-to-image case).
    Everything,
    Rectangles,
    Strokes,
    Outpaint,
}

/// Share of masks that regenerate everything.
pub const P_EVERYTHING: f64 = 0.1;

/// Draws one `size × size` keep mask (row-major, 1 = keep).
pub fn draw_keep_mask<R: Rng>(rng: &mut R, size: usize) -> (Vec<f32>, MaskKind) {
    let mut regen = vec![false; size * size];
    let kind = if rng.random::<f64>() < P_EVERYTHING {
        regen.fill(true);
        MaskKind::Everything
    } else {
        match rng.random_range(0..3) {
            0 => {
                rectangles(rng, size, &mut regen);
                MaskKind::Rectangles
            }
            1 => {
                strokes(rng, size, &mut regen);
                MaskKind::Strokes
            }
            _ => {
                outpaint(rng, size, &mut regen);
                MaskKind::Outpaint
            }
        }
    };
    let n = regen.iter().filter(|&&r| r).count();
    if kind != MaskKind::Everything && (n == 0 || n == regen.len()) {
        // Degenerate draw (a tiny size): the centre half instead.
        regen.fill(false);
        fill_rect(&mut regen, size, size / 4, size / 4, size / 2, size / 2);
    }
    let keep = regen.iter().map(|&r| if r { 0.0 } else { 1.0 }).collect();
    (keep, kind)
}

fn fill_rect(regen: &mut [bool], size: usize, x0: usize, y0: usize, w: usize, h: usize) {
    for y in y0..(y0 + h).min(size) {
        for x in x0..(x0 + w).min(size) {
            regen[y * size + x] = true;
        }
    }
}

/// One to three boxes, each a quarter to three quarters of the side.
fn rectangles<R: Rng>(rng: &mut R, size: usize, regen: &mut [bool]) {
    let (lo, hi) = ((size / 4).max(1), (size * 3 / 4).max(2));
    for _ in 0..rng.random_range(1..=3) {
        let w = rng.random_range(lo..hi);
        let h = rng.random_range(lo..hi);
        let x = rng.random_range(0..=size - w);
        let y = rng.random_range(0..=size - h);
        fill_rect(regen, size, x, y, w, h);
    }
}

/// One to four strokes of a round brush: a random walk of 3–8 segments.
fn strokes<R: Rng>(rng: &mut R, size: usize, regen: &mut [bool]) {
    let s = size as f64;
    for _ in 0..rng.random_range(1..=4) {
        let radius = rng.random_range(s / 20.0..s / 8.0).max(0.8);
        let (mut x, mut y) = (rng.random_range(0.0..s), rng.random_range(0.0..s));
        let mut angle = rng.random_range(0.0..std::f64::consts::TAU);
        for _ in 0..rng.random_range(3..=8) {
            angle += rng.random_range(-1.2..1.2);
            let len = rng.random_range(s / 10.0..s / 3.0);
            let (nx, ny) = (
                (x + len * angle.cos()).clamp(0.0, s - 1.0),
                (y + len * angle.sin()).clamp(0.0, s - 1.0),
            );
            let n = (len / (radius * 0.5)).ceil().max(1.0) as usize;
            for i in 0..=n {
                let f = i as f64 / n as f64;
                disc(regen, size, x + (nx - x) * f, y + (ny - y) * f, radius);
            }
            (x, y) = (nx, ny);
        }
    }
}

fn disc(regen: &mut [bool], size: usize, cx: f64, cy: f64, r: f64) {
    let (y0, y1) = ((cy - r).floor().max(0.0) as usize, (cy + r).ceil() as usize);
    let (x0, x1) = ((cx - r).floor().max(0.0) as usize, (cx + r).ceil() as usize);
    for y in y0..=y1.min(size - 1) {
        for x in x0..=x1.min(size - 1) {
            let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            if dx * dx + dy * dy <= r * r {
                regen[y * size + x] = true;
            }
        }
    }
}

/// A band along one side (a quarter to a half of the picture), or a frame around all four.
fn outpaint<R: Rng>(rng: &mut R, size: usize, regen: &mut [bool]) {
    let side = rng.random_range(0..5);
    if side == 4 {
        let w = rng.random_range((size / 8).max(1)..=(size / 4).max(1));
        for y in 0..size {
            for x in 0..size {
                if x < w || y < w || x >= size - w || y >= size - w {
                    regen[y * size + x] = true;
                }
            }
        }
        return;
    }
    let w = rng.random_range((size / 4).max(1)..=(size / 2).max(1));
    match side {
        0 => fill_rect(regen, size, 0, 0, w, size),
        1 => fill_rect(regen, size, size - w, 0, w, size),
        2 => fill_rect(regen, size, 0, 0, size, w),
        _ => fill_rect(regen, size, 0, size - w, size, w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_mix_has_every_kind_and_never_keeps_everything() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            let (keep, kind) = draw_keep_mask(&mut rng, 32);
            let regen = keep.iter().filter(|&&k| k == 0.0).count();
            assert!(regen > 0, "an all-keep mask");
            match kind {
                MaskKind::Everything => {
                    assert_eq!(regen, 32 * 32);
                    counts[0] += 1
                }
                MaskKind::Rectangles => counts[1] += 1,
                MaskKind::Strokes => counts[2] += 1,
                MaskKind::Outpaint => counts[3] += 1,
            }
            if kind != MaskKind::Everything {
                assert!(regen < 32 * 32, "{kind:?} regenerates everything");
            }
        }
        // ~10% everything, the rest split in thirds.
        assert!((150..250).contains(&counts[0]), "{counts:?}");
        for c in &counts[1..] {
            assert!((500..700).contains(c), "{counts:?}");
        }
    }

    #[test]
    fn masks_are_deterministic_per_seed() {
        let a = draw_keep_mask(&mut ChaCha8Rng::seed_from_u64(5), 16);
        let b = draw_keep_mask(&mut ChaCha8Rng::seed_from_u64(5), 16);
        assert_eq!(a, b);
    }
}
