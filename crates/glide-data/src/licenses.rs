//! Where every image and caption comes from, and the attribution its licence asks for.
//!
//! [`ATTRIBUTION`] is the short notice for the web page and the README; [`licenses_markdown`] is
//! the `LICENSES.md` written beside the shards.

use crate::sources::{EMOJIBASE_PACKAGE, Style};

/// One upstream source of the dataset.
#[derive(Clone, Copy, Debug)]
pub struct SourceLicense {
    /// The artwork or data set.
    pub title: &'static str,
    /// Style name, or `captions` for emojibase.
    pub used_for: &'static str,
    /// The npm package it is read from.
    pub package: &'static str,
    /// SPDX licence identifier.
    pub license: &'static str,
    pub license_url: &'static str,
    /// Copyright holder as the project states it.
    pub holder: &'static str,
    /// The project's home.
    pub url: &'static str,
}

/// Every source, in the order of [`Style::ALL`] followed by the caption source.
pub const SOURCES: [SourceLicense; 5] = [
    SourceLicense {
        title: "Noto Emoji",
        used_for: "noto",
        package: "emoji-datasource-google",
        license: "Apache-2.0",
        license_url: "https://www.apache.org/licenses/LICENSE-2.0",
        holder: "Google Inc.",
        url: "https://github.com/googlefonts/noto-emoji",
    },
    SourceLicense {
        title: "Twemoji",
        used_for: "twemoji",
        package: "emoji-datasource-twitter",
        license: "CC-BY-4.0",
        license_url: "https://creativecommons.org/licenses/by/4.0/",
        holder: "Twitter, Inc and other contributors",
        url: "https://github.com/jdecked/twemoji",
    },
    SourceLicense {
        title: "OpenMoji",
        used_for: "openmoji",
        package: "openmoji",
        license: "CC-BY-SA-4.0",
        license_url: "https://creativecommons.org/licenses/by-sa/4.0/",
        holder: "OpenMoji, HfG Schwäbisch Gmünd (Benedikt Groß, Daniel Utz and the OpenMoji contributors)",
        url: "https://openmoji.org",
    },
    SourceLicense {
        title: "Fluent Emoji 3D",
        used_for: "fluent-3d",
        package: "@lobehub/fluent-emoji-3d",
        license: "MIT",
        license_url: "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE",
        holder: "Microsoft Corporation (packaged by LobeHub)",
        url: "https://github.com/microsoft/fluentui-emoji",
    },
    SourceLicense {
        title: "Emojibase (names and keywords from Unicode CLDR)",
        used_for: "captions",
        package: EMOJIBASE_PACKAGE,
        license: "MIT",
        license_url: "https://github.com/milesj/emojibase/blob/master/LICENSE",
        holder: "Miles Johnson; CLDR annotations © Unicode, Inc. (Unicode License v3)",
        url: "https://emojibase.dev",
    },
];

/// The short notice to show wherever the dataset or a model trained on it is shown: the web page,
/// the README, a model card. Covers the CC-BY and CC-BY-SA attribution requirements.
pub const ATTRIBUTION: &str = "Training images: Noto Emoji © Google Inc. (Apache-2.0); \
Twemoji © Twitter, Inc and other contributors, licensed under CC-BY 4.0 \
(https://creativecommons.org/licenses/by/4.0/); \
all OpenMoji emojis designed by OpenMoji – the open-source emoji and icon project, licensed under \
CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/); \
Fluent Emoji 3D © Microsoft Corporation (MIT). \
Captions built from Emojibase (MIT) and Unicode CLDR names. \
The images were rasterised, composited on white and resized to 64 and 256 pixels.";

/// The license of one source, by style.
pub fn source_for(style: Style) -> &'static SourceLicense {
    SOURCES
        .iter()
        .find(|s| s.used_for == style.name())
        .expect("every style has a source entry")
}

/// `LICENSES.md` for a built dataset; `versions` are `(package, version)` pairs as installed.
pub fn licenses_markdown(versions: &[(String, String)]) -> String {
    let version_of = |package: &str| {
        versions
            .iter()
            .find(|(p, _)| p == package)
            .map_or("unknown", |(_, v)| v.as_str())
    };
    let mut md = String::from(
        "# Licences of the emoji dataset\n\n\
         This dataset is a derivative of the works below. Each sample's `.json` names its `source` \
         package and `license`. Changes made: the images were rasterised (OpenMoji SVG, at 256 px), \
         alpha-composited on a white background, resized with a Lanczos-3 filter to 64×64 (and \
         256×256 where the source is that large) and re-encoded as PNG; captions were generated \
         from Emojibase labels and keywords.\n\n\
         ## Attribution\n\n",
    );
    md.push_str(ATTRIBUTION);
    md.push_str("\n\n## Sources\n\n");
    md.push_str("| used for | work | package | licence | copyright holder | home |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for s in &SOURCES {
        md.push_str(&format!(
            "| {} | {} | `{}@{}` | [{}]({}) | {} | {} |\n",
            s.used_for,
            s.title,
            s.package,
            version_of(s.package),
            s.license,
            s.license_url,
            s.holder,
            s.url
        ));
    }
    md.push_str(
        "\n## Terms that follow from these licences\n\n\
         * **Twemoji (CC-BY-4.0)**: credit \"Twemoji, © Twitter, Inc and other contributors\", link \
         the licence, and say that the images were modified (as above).\n\
         * **OpenMoji (CC-BY-SA-4.0)**: credit \"All emojis designed by OpenMoji – the open-source \
         emoji and icon project. License: CC BY-SA 4.0\". The `openmoji_*` samples are adaptations \
         and are shared under CC-BY-SA-4.0 too: redistribute them (and adaptations of them) under \
         the same licence.\n\
         * **Noto Emoji (Apache-2.0)**: keep this notice and a copy of the licence with \
         redistributed images.\n\
         * **Fluent Emoji 3D and Emojibase (MIT)**: keep the copyright notice and the MIT licence \
         text with redistributed copies.\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_style_has_its_licence_and_attribution() {
        for style in Style::ALL {
            let source = source_for(style);
            assert_eq!(source.license, style.license());
            assert_eq!(source.package, style.package());
        }
        for needle in [
            "CC-BY 4.0",
            "CC BY-SA 4.0",
            "OpenMoji",
            "Twitter, Inc",
            "Apache-2.0",
            "MIT",
        ] {
            assert!(ATTRIBUTION.contains(needle), "attribution lacks {needle}");
        }
        let md = licenses_markdown(&[("openmoji".into(), "17.0.0".into())]);
        assert!(md.contains("`openmoji@17.0.0`"));
        assert!(md.contains("CC-BY-SA-4.0"));
    }
}
