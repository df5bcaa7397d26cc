//! Helpers shared by the training tests: scratch folders and a small captioned image folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A fresh temporary folder for test `name` (per process).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("glide-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Twelve small pictures of coloured shapes with captions (and one corrupt file, skipped).
pub fn shapes_folder(dir: &Path) {
    let colours = [
        ("red", [220u8, 30, 30]),
        ("green", [30, 180, 60]),
        ("blue", [40, 60, 220]),
    ];
    for (ci, (name, rgb)) in colours.iter().enumerate() {
        for (si, shape) in ["circle", "square", "bar", "ring"].iter().enumerate() {
            let img = image::RgbImage::from_fn(24, 24, |x, y| {
                let (dx, dy) = (x as f32 - 11.5, y as f32 - 11.5);
                let r = (dx * dx + dy * dy).sqrt();
                let inside = match si {
                    0 => r < 8.0,
                    1 => dx.abs() < 7.0 && dy.abs() < 7.0,
                    2 => dy.abs() < 3.0,
                    _ => (5.0..9.0).contains(&r),
                };
                image::Rgb(if inside { *rgb } else { [255, 255, 255] })
            });
            let stem = dir.join(format!("{ci}-{si}"));
            img.save(stem.with_extension("png")).unwrap();
            std::fs::write(
                stem.with_extension("txt"),
                format!("a {name} {shape}\n{name} {shape}, flat"),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
}
