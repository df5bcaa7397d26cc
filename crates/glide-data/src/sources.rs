//! The four emoji styles, the npm packages that hold them, and their licences.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::hexcode;

/// An emoji art style; each comes from one npm package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Style {
    /// Google's Noto Color Emoji, 64 px PNG from `emoji-datasource-google`.
    #[serde(rename = "noto")]
    Noto,
    /// Twitter's Twemoji, 64 px PNG from `emoji-datasource-twitter`.
    #[serde(rename = "twemoji")]
    Twemoji,
    /// OpenMoji, SVG rasterised at 256 px.
    #[serde(rename = "openmoji")]
    OpenMoji,
    /// Microsoft Fluent Emoji 3D, 256 px WebP from `@lobehub/fluent-emoji-3d`.
    #[serde(rename = "fluent-3d")]
    Fluent3d,
}

/// The npm package that holds the captions.
pub const EMOJIBASE_PACKAGE: &str = "emojibase-data";

impl Style {
    pub const ALL: [Style; 4] = [
        Style::Noto,
        Style::Twemoji,
        Style::OpenMoji,
        Style::Fluent3d,
    ];

    /// The name used in keys, metadata and captions' style tags.
    pub fn name(self) -> &'static str {
        match self {
            Style::Noto => "noto",
            Style::Twemoji => "twemoji",
            Style::OpenMoji => "openmoji",
            Style::Fluent3d => "fluent-3d",
        }
    }

    pub fn from_name(name: &str) -> Option<Style> {
        Style::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The npm package (folder under `node_modules`).
    pub fn package(self) -> &'static str {
        match self {
            Style::Noto => "emoji-datasource-google",
            Style::Twemoji => "emoji-datasource-twitter",
            Style::OpenMoji => "openmoji",
            Style::Fluent3d => "@lobehub/fluent-emoji-3d",
        }
    }

    /// The image folder inside the package.
    pub fn image_dir(self) -> &'static str {
        match self {
            Style::Noto => "img/google/64",
            Style::Twemoji => "img/twitter/64",
            Style::OpenMoji => "color/svg",
            Style::Fluent3d => "assets",
        }
    }

    /// File extension of the images, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Style::Noto | Style::Twemoji => "png",
            Style::OpenMoji => "svg",
            Style::Fluent3d => "webp",
        }
    }

    /// SPDX identifier of the images' licence.
    pub fn license(self) -> &'static str {
        match self {
            Style::Noto => "Apache-2.0",
            Style::Twemoji => "CC-BY-4.0",
            Style::OpenMoji => "CC-BY-SA-4.0",
            Style::Fluent3d => "MIT",
        }
    }

    /// Three ways a caption names the style. The first is the style's own name, the second the
    /// vendor's, the third a plain description, so a prompt can ask for the look without the brand.
    pub fn phrases(self) -> [&'static str; 3] {
        match self {
            Style::Noto => ["noto style", "google emoji style", "flat cartoon"],
            Style::Twemoji => ["twemoji style", "twitter emoji style", "flat vector"],
            Style::OpenMoji => ["openmoji style", "outlined flat style", "line art"],
            Style::Fluent3d => ["3d render", "fluent 3d style", "glossy 3d"],
        }
    }
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The installed folder of an npm package, checked to exist, with its `package.json` version.
pub fn package_version(node_modules: &Path, package: &str) -> Result<(PathBuf, String), DataError> {
    let dir = node_modules.join(package);
    let manifest = dir.join("package.json");
    if !manifest.is_file() {
        return Err(DataError::MissingPackage {
            package: package.to_string(),
            path: dir,
        });
    }
    let bad = |detail: String| DataError::BadPackageFile {
        path: manifest.clone(),
        what: "an npm package.json with a version",
        detail,
    };
    let text = std::fs::read_to_string(&manifest).map_err(|e| bad(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let version = json
        .get("version")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("no \"version\" field".to_string()))?;
    Ok((dir, version.to_string()))
}

/// The style's image files keyed by normalised hexcode (see [`hexcode::normalize`]).
pub fn index_images(
    package_dir: &Path,
    style: Style,
) -> Result<BTreeMap<String, PathBuf>, DataError> {
    let dir = package_dir.join(style.image_dir());
    let listing = std::fs::read_dir(&dir).map_err(|e| DataError::BadPackageFile {
        path: dir.clone(),
        what: "a folder of emoji images",
        detail: e.to_string(),
    })?;
    let suffix = format!(".{}", style.extension());
    let mut files = BTreeMap::new();
    for entry in listing {
        let entry = entry.map_err(DataError::io("list", &dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(&suffix)) else {
            continue;
        };
        files.insert(hexcode::normalize(stem), entry.path());
    }
    Ok(files)
}
