//! Edit masks as people draw them, and the one place they become the model's convention.
//!
//! People paint what to *regenerate*: white (or transparent, in a mask with an alpha channel) means
//! "fill this in", black means "keep". The model's tensors use GLIDE's convention, 1 = keep; only
//! [`UserMask::keep_at`] converts between the two.

/// A painted mask at its own resolution; `true` = regenerate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMask {
    pub width: usize,
    pub height: usize,
    pub regenerate: Vec<bool>,
}

/// A mask that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaskError {
    #[error(
        "the mask marks nothing to regenerate: paint the area to fill in (white in a mask file, or \
         transparent in one with an alpha channel)"
    )]
    Empty,
    #[error("the mask has {got} bytes but {width}×{height} RGBA needs {want}")]
    Size {
        width: usize,
        height: usize,
        got: usize,
        want: usize,
    },
}

impl UserMask {
    /// Reads an RGBA mask. If any pixel is not opaque the alpha channel decides (transparent =
    /// regenerate); otherwise brightness does (white = regenerate, black = keep), split at mid-grey.
    pub fn from_rgba(rgba: &[u8], width: usize, height: usize) -> Result<Self, MaskError> {
        let want = width.checked_mul(height).and_then(|n| n.checked_mul(4));
        let want = want.unwrap_or(usize::MAX);
        if rgba.len() != want {
            return Err(MaskError::Size {
                width,
                height,
                got: rgba.len(),
                want,
            });
        }
        let px = rgba.chunks_exact(4);
        let alpha = rgba.chunks_exact(4).any(|p| p[3] < 255);
        let regenerate = if alpha {
            px.map(|p| p[3] < 128).collect()
        } else {
            // Rec. 601 luma, integer arithmetic.
            px.map(|p| (299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32) >= 128_000)
                .collect()
        };
        Ok(Self {
            width,
            height,
            regenerate,
        })
    }

    /// A mask of one value everywhere.
    pub fn filled(width: usize, height: usize, regenerate: bool) -> Self {
        Self {
            width,
            height,
            regenerate: vec![regenerate; width * height],
        }
    }

    /// Whether nothing is marked to regenerate.
    pub fn is_empty(&self) -> bool {
        !self.regenerate.iter().any(|&r| r)
    }

    /// Fails with a message when nothing is marked.
    pub fn require_some(self) -> Result<Self, MaskError> {
        if self.is_empty() {
            Err(MaskError::Empty)
        } else {
            Ok(self)
        }
    }

    pub fn invert(&mut self) {
        for r in &mut self.regenerate {
            *r = !*r;
        }
    }

    /// This mask at `width × height`. A target pixel regenerates if any mask pixel it covers
    /// does, so a thin stroke survives downsampling and a composite at either resolution never
    /// shows an unfilled seam; upsampling is nearest-neighbour.
    pub fn resized(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let mut regenerate = vec![false; width * height];
        for y in 0..self.height {
            let ty = y * height / self.height;
            for x in 0..self.width {
                if self.regenerate[y * self.width + x] {
                    regenerate[ty * width + x * width / self.width] = true;
                }
            }
        }
        // Upsampling: fill the target pixels no mask pixel landed on.
        if self.width < width || self.height < height {
            for ty in 0..height {
                for tx in 0..width {
                    let (y, x) = (ty * self.height / height, tx * self.width / width);
                    if self.regenerate[y * self.width + x] {
                        regenerate[ty * width + tx] = true;
                    }
                }
            }
        }
        Self {
            width,
            height,
            regenerate,
        }
    }

    /// The model's keep mask at `size × size` (1 = keep, row-major), from [`Self::resized`]:
    /// the one place the visitor's convention becomes the model's.
    pub fn keep_at(&self, size: usize) -> Vec<f32> {
        self.resized(size, size)
            .regenerate
            .iter()
            .map(|&r| if r { 0.0 } else { 1.0 })
            .collect()
    }

    /// White (regenerate) / black (keep) RGB bytes, the format `glide inpaint --mask` reads.
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.regenerate
            .iter()
            .flat_map(|&r| if r { [255u8; 3] } else { [0u8; 3] })
            .collect()
    }
}

/// Interleaved RGB bytes `[H, W, 3]` → `[3, H, W]` floats in [-1, 1] (GLIDE's `x/127.5 − 1`).
pub fn rgb8_to_chw(rgb: &[u8], height: usize, width: usize) -> Vec<f32> {
    let plane = height * width;
    assert_eq!(rgb.len(), 3 * plane, "expected [H, W, 3] RGB bytes");
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// Puts `edited` (RGB, same size as `original`) into `original` where `mask` regenerates; every
/// other pixel stays byte-for-byte the original.
pub fn composite(original: &[u8], edited: &[u8], mask: &UserMask) -> Vec<u8> {
    assert_eq!(original.len(), mask.width * mask.height * 3);
    assert_eq!(edited.len(), original.len());
    let mut out = original.to_vec();
    for (i, &r) in mask.regenerate.iter().enumerate() {
        if r {
            out[i * 3..i * 3 + 3].copy_from_slice(&edited[i * 3..i * 3 + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgba(px: &[[u8; 4]]) -> Vec<u8> {
        px.iter().flatten().copied().collect()
    }

    #[test]
    fn white_regenerates_black_keeps() {
        let m = UserMask::from_rgba(&rgba(&[[255; 4], [0, 0, 0, 255]]), 2, 1).unwrap();
        assert_eq!(m.regenerate, [true, false]);
        assert_eq!(m.keep_at(2), [0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn transparent_regenerates_in_an_alpha_mask() {
        // White but transparent regenerates; black and opaque keeps.
        let m = UserMask::from_rgba(&rgba(&[[255, 255, 255, 0], [0, 0, 0, 255]]), 2, 1).unwrap();
        assert_eq!(m.regenerate, [true, false]);
        let m = UserMask::from_rgba(&rgba(&[[0, 0, 0, 0], [255, 255, 255, 255]]), 2, 1).unwrap();
        assert_eq!(m.regenerate, [true, false]);
    }

    #[test]
    fn empty_masks_and_wrong_sizes_are_errors() {
        assert_eq!(
            UserMask::filled(4, 4, false).require_some(),
            Err(MaskError::Empty)
        );
        assert!(UserMask::from_rgba(&[0; 7], 2, 1).is_err());
        let mut m = UserMask::filled(2, 2, false);
        m.invert();
        assert!(!m.is_empty());
    }

    #[test]
    fn downsampling_keeps_a_pixel_only_if_all_of_it_is_kept() {
        // 4×4 → 2×2: one regenerated source pixel regenerates its whole model pixel.
        let mut m = UserMask::filled(4, 4, false);
        m.regenerate[4 + 1] = true; // (x 1, y 1) → model (0, 0)
        assert_eq!(m.keep_at(2), [0.0, 1.0, 1.0, 1.0]);
        // 2×2 → 4×4 upsampling covers every model pixel.
        let mut m = UserMask::filled(2, 2, false);
        m.regenerate[3] = true;
        let k = m.keep_at(4);
        assert_eq!(k.iter().filter(|&&v| v == 0.0).count(), 4);
        assert_eq!(k[15], 0.0);
        assert_eq!(k[0], 1.0);
    }

    #[test]
    fn composite_touches_only_regenerated_pixels() {
        let m = UserMask {
            width: 2,
            height: 1,
            regenerate: vec![false, true],
        };
        let out = composite(&[1, 2, 3, 4, 5, 6], &[9; 6], &m);
        assert_eq!(out, [1, 2, 3, 9, 9, 9]);
        assert_eq!(rgb8_to_chw(&[0, 255, 0], 1, 1), [-1.0, 1.0, -1.0]);
    }
}
