//! Shard and folder readers on small hand-made inputs, including broken ones.

mod common;

use std::path::{Path, PathBuf};

use glide_data::imaging::encode_png;
use glide_data::shard::{ShardSample, tar_bytes};
use glide_data::{DataError, read_folder, read_shards, shard_paths};
use image::{Rgb, RgbImage};

fn png(shade: u8) -> Vec<u8> {
    encode_png(&RgbImage::from_fn(64, 64, |x, y| {
        Rgb([shade, x as u8 * 4, y as u8 * 4])
    }))
}

fn sample(key: &str, files: Vec<(&'static str, Vec<u8>)>) -> ShardSample {
    ShardSample {
        key: key.to_string(),
        files,
    }
}

/// Three samples: captioned with json, without txt and json, with an empty txt and `flip: false`.
fn write_shard(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let bytes = tar_bytes(&[
        sample(
            "noto_1f34e",
            vec![
                ("png", png(10)),
                ("txt", b"a red apple\nred apple, noto style\n".to_vec()),
                ("json", br#"{"flip": true, "style": "noto"}"#.to_vec()),
            ],
        ),
        sample("noto_1f431", vec![("png", png(20))]),
        sample(
            "noto_27a1",
            vec![
                ("png", png(30)),
                ("txt", b"\n  \n".to_vec()),
                ("json", br#"{"flip": false}"#.to_vec()),
            ],
        ),
    ]);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn corrupt_message(err: DataError, path: &Path) -> String {
    let msg = err.to_string();
    assert!(matches!(err, DataError::CorruptShard { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    assert!(
        msg.contains("glide data emoji"),
        "message does not say how to fix it: {msg}"
    );
    msg
}

#[test]
fn reads_captions_flip_and_unconditional_samples() {
    let dir = common::temp_dir("shard-ok");
    let (path, _) = write_shard(&dir, "train-000000.tar");
    let samples = read_shards(&[path]).unwrap();
    let keys: Vec<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["noto_1f34e", "noto_1f431", "noto_27a1"]);
    assert_eq!(
        samples[0].captions,
        ["a red apple", "red apple, noto style"]
    );
    assert_eq!(samples[0].meta["style"], "noto");
    assert_eq!(samples[0].image.get_pixel(0, 0), &Rgb([10, 0, 0]));
    assert!(samples[1].captions.is_empty() && samples[1].flip_ok && samples[1].meta.is_null());
    assert!(samples[2].captions.is_empty() && !samples[2].flip_ok);
}

#[test]
fn truncated_shard_names_the_file_and_entry() {
    let dir = common::temp_dir("shard-cut");
    let (_, bytes) = write_shard(&dir, "whole.tar");
    // Cut inside the second sample's png.
    let cut = dir.join("cut-in-entry.tar");
    let second_png = bytes
        .windows(14)
        .position(|w| w == b"noto_1f431.png")
        .unwrap();
    std::fs::write(&cut, &bytes[..second_png + 512 + 100]).unwrap();
    let msg = corrupt_message(read_shards(std::slice::from_ref(&cut)).unwrap_err(), &cut);
    assert!(msg.contains("noto_1f431.png"), "{msg}");
    // Cut exactly between two entries: tar readers see a clean end, so the missing end marker is
    // what gives it away.
    let boundary = dir.join("cut-at-boundary.tar");
    std::fs::write(&boundary, &bytes[..second_png]).unwrap();
    let msg = corrupt_message(
        read_shards(std::slice::from_ref(&boundary)).unwrap_err(),
        &boundary,
    );
    assert!(msg.contains("after noto_1f34e.json"), "{msg}");
}

#[test]
fn undecodable_or_missing_png_names_the_key() {
    let dir = common::temp_dir("shard-bad-png");
    let path = dir.join("train-000000.tar");
    let mut broken = png(1);
    broken.truncate(40);
    std::fs::write(
        &path,
        tar_bytes(&[sample(
            "noto_1f600",
            vec![("png", broken), ("txt", b"x".to_vec())],
        )]),
    )
    .unwrap();
    let msg = corrupt_message(read_shards(std::slice::from_ref(&path)).unwrap_err(), &path);
    assert!(msg.contains("noto_1f600.png"), "{msg}");

    std::fs::write(
        &path,
        tar_bytes(&[sample("noto_1f601", vec![("txt", b"x".to_vec())])]),
    )
    .unwrap();
    let msg = corrupt_message(read_shards(std::slice::from_ref(&path)).unwrap_err(), &path);
    assert!(msg.contains("noto_1f601"), "{msg}");
}

#[test]
fn shard_paths_lists_a_split_sorted() {
    let dir = common::temp_dir("shard-paths");
    for name in [
        "train-000001.tar",
        "train-000000.tar",
        "heldout-000000.tar",
        "train-000002.tar.tmp",
    ] {
        std::fs::write(dir.join(name), b"").unwrap();
    }
    let names = |paths: Vec<PathBuf>| -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(shard_paths(&dir, "train").unwrap()),
        ["train-000000.tar", "train-000001.tar"]
    );
    assert_eq!(
        names(shard_paths(&dir, "heldout").unwrap()),
        ["heldout-000000.tar"]
    );
    assert_eq!(
        names(shard_paths(&dir.join("train-*"), "train").unwrap()),
        ["train-000000.tar", "train-000001.tar"]
    );
    assert_eq!(
        names(shard_paths(&dir.join("train-000001.tar"), "train").unwrap()),
        ["train-000001.tar"]
    );
    let err = shard_paths(&dir, "valid").unwrap_err();
    assert!(matches!(err, DataError::NoShards { .. }), "{err}");
    assert!(err.to_string().contains("glide data emoji"), "{err}");
}

#[test]
fn folder_skips_unreadable_images_and_counts_caption_gaps() {
    let dir = common::temp_dir("folder");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    // Wide image with a caption: centre-cropped to its middle square.
    let wide = RgbImage::from_fn(90, 60, |x, _| {
        if (15..75).contains(&x) {
            Rgb([0, 0, 200])
        } else {
            Rgb([200, 0, 0])
        }
    });
    wide.save(dir.join("wide.png")).unwrap();
    std::fs::write(dir.join("wide.txt"), "a blue square\n").unwrap();
    // Image with an empty caption file.
    RgbImage::from_pixel(32, 32, Rgb([0, 128, 0]))
        .save(dir.join("nested/green.jpg"))
        .unwrap();
    std::fs::write(dir.join("nested/green.txt"), "\n").unwrap();
    // Image without a caption file.
    RgbImage::from_pixel(16, 16, Rgb([9, 9, 9]))
        .save(dir.join("nested/grey.webp"))
        .unwrap();
    // Not an image at all.
    std::fs::write(dir.join("broken.png"), b"this is not a png").unwrap();
    std::fs::write(dir.join("broken.txt"), "never read").unwrap();
    std::fs::write(dir.join("notes.md"), "ignored").unwrap();

    let (samples, summary) = read_folder(&dir).unwrap();
    assert_eq!(summary.loaded, 3);
    assert_eq!(summary.skipped_unreadable, 1);
    assert_eq!(summary.empty_captions, 1);
    assert_eq!(summary.missing_captions, 1);
    let keys: Vec<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["nested/green", "nested/grey", "wide"]);
    let wide = &samples[2];
    assert_eq!(wide.captions, ["a blue square"]);
    assert_eq!(wide.image.dimensions(), (60, 60));
    assert!(
        wide.image.pixels().all(|p| p == &Rgb([0, 0, 200])),
        "crop is not centred"
    );
    assert!(samples[0].captions.is_empty() && samples[1].captions.is_empty());
}

#[test]
fn empty_folder_is_an_error_that_says_what_to_do() {
    let dir = common::temp_dir("folder-empty");
    let err = read_folder(&dir).unwrap_err();
    assert!(matches!(err, DataError::EmptyFolder { .. }), "{err}");
    assert!(err.to_string().contains(".txt"), "{err}");
}

#[test]
fn pack_resizes_pictures_and_keeps_keys_captions_metadata_and_splits() {
    let from = common::temp_dir("pack-from");
    write_shard(&from, "train-000000.tar");
    write_shard(&from, "heldout-000000.tar");
    std::fs::write(from.join("manifest.json"), b"{}").unwrap();
    let to = common::temp_dir("pack-to");
    let s = glide_data::pack::pack(&from, &to, 16).unwrap();
    assert_eq!((s.shards, s.images), (2, 6));
    assert!(to.join("manifest.json").exists());
    for split in ["train", "heldout"] {
        let before = read_shards(&shard_paths(&from, split).unwrap()).unwrap();
        let after = read_shards(&shard_paths(&to, split).unwrap()).unwrap();
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(
                (&b.key, &b.captions, b.flip_ok),
                (&a.key, &a.captions, a.flip_ok)
            );
            assert_eq!(b.meta, a.meta);
            assert_eq!(a.image.dimensions(), (16, 16));
        }
    }
    let err = glide_data::pack::pack(&from, &to, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--size"), "{err}");
}

/// A valid PNG header that claims `w × h` pixels (its IHDR rewritten, CRC and all), followed by
/// the 1×1 image's data: a decoder that trusted the header would try to allocate it all.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = encode_png(&RgbImage::new(1, 1));
    // Signature (8), IHDR length (4) and type (4), then width and height.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn an_image_larger_than_the_limit_is_refused_from_its_header() {
    use glide_data::imaging::{ImageReadError, decode_image};
    let err = decode_image(&png_claiming(20_000, 20_000)).unwrap_err();
    assert!(
        matches!(err, ImageReadError::TooLarge { width: 20_000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("20000×20000") && err.to_string().contains("scale it down"));
    // Long and thin is refused by its side, not only by its area.
    let err = decode_image(&png_claiming(100_000, 2)).unwrap_err();
    assert!(matches!(err, ImageReadError::TooLarge { .. }), "{err}");
    // Within the limits, the same forged header gets as far as the decoder, which finds the data
    // too short: an error, not an allocation of the claimed size.
    let err = decode_image(&png_claiming(4_000, 4_000)).unwrap_err();
    assert!(matches!(err, ImageReadError::Decode(_)), "{err}");
    assert!(decode_image(&png(7)).is_ok());

    // In a folder of training images it is skipped and counted.
    let dir = common::temp_dir("folder-huge");
    std::fs::write(dir.join("huge.png"), png_claiming(20_000, 20_000)).unwrap();
    std::fs::write(dir.join("ok.png"), png(9)).unwrap();
    let (samples, summary) = read_folder(&dir).unwrap();
    assert_eq!((samples.len(), summary.skipped_unreadable), (1, 1));
}

#[test]
fn lenient_reading_keeps_the_whole_samples_of_a_damaged_shard_and_names_the_rest() {
    use glide_data::read_shards_lenient;
    let dir = common::temp_dir("shard-lenient");
    let (_, bytes) = write_shard(&dir, "whole.tar");
    let second_png = bytes
        .windows(14)
        .position(|w| w == b"noto_1f431.png")
        .unwrap();
    let cut = dir.join("train-000001.tar");
    std::fs::write(&cut, &bytes[..second_png + 512 + 100]).unwrap();
    let bad = dir.join("train-000002.tar");
    let mut broken = png(1);
    broken.truncate(40);
    std::fs::write(
        &bad,
        tar_bytes(&[
            sample("a_1", vec![("png", png(3)), ("txt", b"one".to_vec())]),
            sample("a_2", vec![("png", broken), ("txt", b"two".to_vec())]),
            sample("a_3", vec![("png", png_claiming(20_000, 20_000))]),
            sample("a_4", vec![("png", png(4)), ("txt", b"four".to_vec())]),
        ]),
    )
    .unwrap();
    let (samples, problems) = read_shards_lenient(&[cut.clone(), bad.clone()]).unwrap();
    let keys: Vec<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["noto_1f34e", "a_1", "a_4"]);
    let msgs: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs[0].contains("train-000001.tar") && msgs[0].contains("noto_1f431.png"));
    assert!(msgs[1].contains("train-000002.tar") && msgs[1].contains("a_2.png"));
    assert!(msgs[2].contains("a_3.png") && msgs[2].contains("20000×20000"));
    // The strict reader still refuses both.
    assert!(read_shards(std::slice::from_ref(&cut)).is_err());
    assert!(read_shards(std::slice::from_ref(&bad)).is_err());
}
