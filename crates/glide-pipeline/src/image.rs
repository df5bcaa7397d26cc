//! Samples to pixels: GLIDE's `((x + 1)·127.5).round().clamp(0, 255)`, grids, and PNG files that
//! carry their generation parameters in tEXt chunks.

/// One `[3, H, W]` sample in [-1, 1] → interleaved RGB bytes.
pub fn to_rgb8(chw: &[f32], height: usize, width: usize) -> Vec<u8> {
    let plane = height * width;
    assert_eq!(chw.len(), 3 * plane, "expected a [3, H, W] sample");
    let mut out = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        for c in 0..3 {
            out.push(
                ((chw[c * plane + i] + 1.0) * 127.5)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
        }
    }
    out
}

/// Splits a `[B, 3, H, W]` batch into RGB images.
pub fn batch_to_rgb8(bchw: &[f32], batch: usize, height: usize, width: usize) -> Vec<Vec<u8>> {
    let n = 3 * height * width;
    (0..batch)
        .map(|i| to_rgb8(&bchw[i * n..(i + 1) * n], height, width))
        .collect()
}

/// Lays RGB images of one size out in a grid of `cols` columns (GLIDE's `make_grid` without
/// padding).
pub fn grid(
    images: &[Vec<u8>],
    height: usize,
    width: usize,
    cols: usize,
) -> (Vec<u8>, usize, usize) {
    let cols = cols.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(cols);
    let (gw, gh) = (cols * width, rows * height);
    let mut out = vec![255u8; gw * gh * 3];
    for (i, img) in images.iter().enumerate() {
        let (r, c) = (i / cols, i % cols);
        for y in 0..height {
            let src = &img[y * width * 3..(y + 1) * width * 3];
            let dst = ((r * height + y) * gw + c * width) * 3;
            out[dst..dst + width * 3].copy_from_slice(src);
        }
    }
    (out, gw, gh)
}

/// Encodes RGB bytes as PNG with `(keyword, text)` tEXt chunks.
pub fn encode_png(rgb: &[u8], width: usize, height: usize, text: &[(String, String)]) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        for (k, v) in text {
            // tEXt is Latin-1; non-Latin-1 prompts go into an iTXt chunk instead.
            if v.chars().all(|c| (c as u32) < 256) {
                enc.add_text_chunk(k.clone(), v.clone())
                    .expect("valid keyword");
            } else {
                enc.add_itxt_chunk(k.clone(), v.clone())
                    .expect("valid keyword");
            }
        }
        let mut w = enc.write_header().expect("PNG header to memory");
        w.write_image_data(rgb).expect("PNG data to memory");
    }
    buf
}

/// Text chunks of a PNG (tEXt and iTXt), for tests and for reading parameters back.
pub fn read_png_text(bytes: &[u8]) -> Vec<(String, String)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let Ok(reader) = decoder.read_info() else {
        return Vec::new();
    };
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        if let Ok(s) = t.get_text() {
            out.push((t.keyword.clone(), s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_follow_glide_rounding() {
        let chw = [-1.0, 0.0, 1.0, 2.0, -3.0, 0.5];
        let rgb = to_rgb8(&chw, 1, 2);
        // pixel 0: (r,g,b) = (-1, 1, -3); pixel 1: (0, 2, 0.5)
        assert_eq!(rgb, [0, 255, 0, 128, 255, 191]);
    }

    #[test]
    fn png_keeps_parameters() {
        let png = encode_png(
            &[0u8; 12],
            2,
            2,
            &[
                ("prompt".into(), "a corgi".into()),
                ("negative".into(), "日本".into()),
            ],
        );
        let text = read_png_text(&png);
        assert!(text.contains(&("prompt".into(), "a corgi".into())));
        assert!(text.contains(&("negative".into(), "日本".into())));
    }

    #[test]
    fn grid_places_images() {
        let a = vec![1u8; 3];
        let b = vec![2u8; 3];
        let (g, w, h) = grid(&[a, b], 1, 1, 2);
        assert_eq!((w, h), (2, 1));
        assert_eq!(g, [1, 1, 1, 2, 2, 2]);
    }
}
