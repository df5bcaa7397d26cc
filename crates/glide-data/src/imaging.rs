//! Decoding, rasterising, compositing and resizing: every source image becomes an opaque RGB square.

use std::io::Cursor;
use std::path::Path;

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{DynamicImage, ImageEncoder, ImageFormat, Rgb, RgbImage, RgbaImage};
use resvg::{tiny_skia, usvg};

use crate::error::DataError;
use crate::sources::Style;

/// Side of the base model's images.
pub const SMALL: u32 = 64;
/// Side of the upsampler's images, written only where the source has that much detail.
pub const LARGE: u32 = 256;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// One source image at the dataset's sizes.
pub struct Rendered {
    /// 64×64.
    pub small: RgbImage,
    /// 256×256, for sources at least that large (OpenMoji, Fluent 3D).
    pub large: Option<RgbImage>,
}

/// Reads and renders one emoji image file of the given style.
pub fn render_source(style: Style, path: &Path) -> Result<Rendered, DataError> {
    let bytes = std::fs::read(path).map_err(DataError::io("read", path))?;
    let bad = |detail: String| DataError::BadPackageFile {
        path: path.to_path_buf(),
        what: "an emoji image",
        detail,
    };
    let square = match style {
        Style::OpenMoji => rasterize_svg(&bytes, LARGE).map_err(bad)?,
        Style::Noto | Style::Twemoji | Style::Fluent3d => {
            let format = if style == Style::Fluent3d {
                ImageFormat::WebP
            } else {
                ImageFormat::Png
            };
            let decoded = image::load_from_memory_with_format(&bytes, format)
                .map_err(|e| bad(e.to_string()))?;
            pad_to_square(&flatten_on_white(&decoded.to_rgba8()))
        }
    };
    let side = square.width();
    let large = (side >= LARGE).then(|| resize_square(&square, LARGE));
    Ok(Rendered {
        small: resize_square(&square, SMALL),
        large,
    })
}

/// Renders an SVG document into a `side`×`side` white square, the drawing scaled to fit and
/// centred.
pub fn rasterize_svg(svg: &[u8], side: u32) -> Result<RgbImage, String> {
    let tree = usvg::Tree::from_data(svg, &usvg::Options::default()).map_err(|e| e.to_string())?;
    let size = tree.size();
    let scale = side as f32 / size.width().max(size.height());
    let dx = (side as f32 - size.width() * scale) / 2.0;
    let dy = (side as f32 - size.height() * scale) / 2.0;
    let mut pixmap = tiny_skia::Pixmap::new(side, side).ok_or("zero-sized canvas")?;
    let transform = tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy);
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    // tiny-skia stores premultiplied RGBA: over white, c' = c·a + 255·(1 − a) = c_premul + 255 − a.
    let mut rgb = RgbImage::new(side, side);
    for (out, px) in rgb.pixels_mut().zip(pixmap.data().chunks_exact(4)) {
        let fill = 255 - px[3];
        *out = Rgb([px[0] + fill, px[1] + fill, px[2] + fill]);
    }
    Ok(rgb)
}

/// Alpha-composites straight (non-premultiplied) RGBA over white.
pub fn flatten_on_white(rgba: &RgbaImage) -> RgbImage {
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(px[3]);
        let over = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        *out = Rgb([over(px[0]), over(px[1]), over(px[2])]);
    }
    rgb
}

/// Pads a non-square image with white to a centred square (emoji must not be cropped).
pub fn pad_to_square(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, WHITE);
    image::imageops::replace(
        &mut out,
        img,
        i64::from((side - w) / 2),
        i64::from((side - h) / 2),
    );
    out
}

/// Crops the centred square of a non-square image (photos: the subject is usually central).
pub fn center_crop_square(img: &DynamicImage) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let side = w.min(h);
    img.crop_imm((w - side) / 2, (h - side) / 2, side, side)
}

/// Resizes a square image to `side`×`side` with a Lanczos-3 filter (a copy if already that size).
pub fn resize_square(img: &RgbImage, side: u32) -> RgbImage {
    if img.dimensions() == (side, side) {
        return img.clone();
    }
    image::imageops::resize(img, side, side, FilterType::Lanczos3)
}

/// Encodes RGB as PNG with the strongest deflate level and per-row adaptive filtering: slower to
/// write, but the shards are built once and carried around many times.
pub fn encode_png(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, PngFilter::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding an in-memory RGB8 image as PNG cannot fail");
    out.into_inner()
}

/// The largest image any command reads: 16,384 pixels a side and 50 megapixels (200 MB as RGBA).
/// The models see 64 px at most; a larger file is refused before it is decoded.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
pub const MAX_IMAGE_PIXELS: u64 = 50_000_000;

/// An image file that cannot be read, in a sentence.
#[derive(Debug, thiserror::Error)]
pub enum ImageReadError {
    #[error(
        "the image is {width}×{height} pixels, more than glide reads ({MAX_IMAGE_SIDE} px a side, \
         {} megapixels); scale it down first (the model sees 64 px)",
        MAX_IMAGE_PIXELS / 1_000_000
    )]
    TooLarge { width: u32, height: u32 },
    #[error("it is not a PNG, JPEG or WebP image this build can decode ({0})")]
    Decode(String),
}

/// Decodes PNG, JPEG or WebP bytes after reading only the header's size: an image larger than
/// [`MAX_IMAGE_SIDE`] / [`MAX_IMAGE_PIXELS`] is refused without allocating it, and the decoder
/// itself is held to the same memory.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, ImageReadError> {
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageReadError::Decode(e.to_string()))
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| ImageReadError::Decode(e.to_string()))?;
    check_image_size(width, height)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 4 + (64 << 20));
    let mut r = reader()?;
    r.limits(limits);
    r.decode()
        .map_err(|e| ImageReadError::Decode(e.to_string()))
}

/// Refuses sizes above [`MAX_IMAGE_SIDE`] a side or [`MAX_IMAGE_PIXELS`] in all.
pub fn check_image_size(width: u32, height: u32) -> Result<(), ImageReadError> {
    if width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || width as u64 * height as u64 > MAX_IMAGE_PIXELS
    {
        return Err(ImageReadError::TooLarge { width, height });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    #[test]
    fn flatten_puts_transparent_pixels_on_white() {
        let mut rgba = RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, Rgba([200, 0, 0, 255]));
        let rgb = flatten_on_white(&rgba);
        assert_eq!(rgb.get_pixel(0, 0), &WHITE);
        assert_eq!(rgb.get_pixel(1, 0), &Rgb([200, 0, 0]));
    }

    #[test]
    fn svg_is_centred_on_white() {
        let svg = br##"<svg viewBox="0 0 72 36" xmlns="http://www.w3.org/2000/svg">
            <rect x="0" y="0" width="72" height="36" fill="#000"/></svg>"##;
        let rgb = rasterize_svg(svg, 64).unwrap();
        assert_eq!(rgb.get_pixel(32, 2), &WHITE, "letterbox above the drawing");
        assert_eq!(
            rgb.get_pixel(32, 32),
            &Rgb([0, 0, 0]),
            "drawing in the middle"
        );
    }

    #[test]
    fn padding_and_cropping_make_squares() {
        let tall = RgbImage::from_pixel(4, 8, Rgb([0, 0, 0]));
        let padded = pad_to_square(&tall);
        assert_eq!(padded.dimensions(), (8, 8));
        assert_eq!(padded.get_pixel(0, 4), &WHITE);
        let cropped = center_crop_square(&DynamicImage::ImageRgb8(tall));
        assert_eq!((cropped.width(), cropped.height()), (4, 4));
    }

    #[test]
    fn png_round_trips() {
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([x as u8 * 30, y as u8 * 30, 7]));
        let decoded = image::load_from_memory(&encode_png(&img))
            .unwrap()
            .to_rgb8();
        assert_eq!(decoded, img);
    }
}
