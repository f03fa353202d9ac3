//! `sluice plugin new <name> [--dir PATH] [--sdk-path PATH]`: start a plugin crate anywhere on
//! disk from the templates in `host/templates/plugin/`.
//!
//! Contract: the crate is written into `--dir` (default `./<name>`), which must not exist or
//! be empty: nothing is ever overwritten. The name is the package name, the plugin's name in
//! its manifest and the file name `sluice plugin build` writes (`<name>.wasm`), so it is
//! lowercase ASCII letters, digits and single `-` between them, starting with a letter. The
//! crate has an empty `[workspace]` (an enclosing workspace does not capture it), its own
//! `[profile.plugin]`, and depends on `sluice-sdk` by version; when an SDK checkout is known
//! (`--sdk-path`, or the one this binary was built from) a `[patch.crates-io]` section points
//! the dependency at it, so the crate builds before the SDK is published.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The `sluice-sdk` version requirement new plugins start with (checked against
/// `sdk/Cargo.toml` by a unit test).
pub const SDK_VERSION: &str = "0.2";

/// The SDK checkout this binary was built from, if it is still there.
const OWN_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

const CARGO_TOML: &str = include_str!("../templates/plugin/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("../templates/plugin/src/lib.rs.tmpl");
const TESTS_RS: &str = include_str!("../templates/plugin/src/tests.rs.tmpl");
const README_MD: &str = include_str!("../templates/plugin/README.md.tmpl");

/// Options of `sluice plugin new`.
#[derive(Debug, Clone)]
pub struct NewOptions {
    pub name: String,
    /// The crate directory to create (default: `./<name>`).
    pub dir: Option<PathBuf>,
    /// A local `sluice-sdk` crate to use through `[patch.crates-io]` (default: this binary's
    /// own checkout, if present).
    pub sdk_path: Option<PathBuf>,
}

/// What was created.
#[derive(Debug, Clone)]
pub struct Created {
    pub dir: PathBuf,
    /// The SDK the crate is patched to use, if any (else crates.io).
    pub sdk_path: Option<PathBuf>,
    pub files: Vec<PathBuf>,
}

/// Creates the crate described by `opts`.
pub fn create(opts: &NewOptions) -> anyhow::Result<Created> {
    validate_name(&opts.name)?;
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&opts.name));
    ensure_empty_dir(&dir)?;
    let sdk_path = match &opts.sdk_path {
        Some(path) => Some(sdk_crate(path)?),
        None => sdk_crate(Path::new(OWN_SDK)).ok(),
    };
    let files = render(&opts.name, sdk_path.as_deref())?;

    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (relative, text) in files {
        let path = dir.join(relative);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(Created {
        dir,
        sdk_path,
        files: written,
    })
}

/// The crate's files (relative path, contents) for plugin `name`.
fn render(name: &str, sdk_path: Option<&Path>) -> anyhow::Result<Vec<(&'static str, String)>> {
    let patch = match sdk_path {
        Some(path) => sdk_patch(path)?,
        None => String::new(),
    };
    let type_name = type_name(name);
    let fill = |template: &str| {
        template
            .replace("__NAME__", name)
            .replace("__TYPE__", &type_name)
            .replace("__SDK_VERSION__", SDK_VERSION)
            .replace("__SDK_PATCH__", &patch)
    };
    Ok(vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("src/tests.rs", fill(TESTS_RS)),
        ("README.md", fill(README_MD)),
    ])
}

/// The `[patch.crates-io]` section that points `sluice-sdk` at the crate in `path`.
fn sdk_patch(path: &Path) -> anyhow::Result<String> {
    let path = path
        .to_str()
        .with_context(|| format!("the SDK path {} is not UTF-8", path.display()))?;
    // A TOML basic string: quotes and backslashes in the path are escaped.
    let path = toml::Value::String(path.to_owned()).to_string();
    Ok(format!(
        "
# Development: build against a local sluice-sdk instead of the crates.io release. To follow
# a branch of the Sluice repository instead, replace the line with
#   sluice-sdk = {{ git = \"<repository URL>\", branch = \"main\" }}
# (cargo finds the crate inside the repository's workspace). Delete the section to use the
# published crate.
[patch.crates-io]
sluice-sdk = {{ path = {path} }}
"
    ))
}

/// `my-dest` → `MyDest`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// Lowercase ASCII letters, digits and single `-` between them, starting with a letter; not
/// a name Rust or cargo reserves.
fn validate_name(name: &str) -> anyhow::Result<()> {
    const RESERVED: [&str; 5] = ["std", "core", "alloc", "test", "proc-macro"];
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !valid {
        bail!(
            "invalid plugin name `{name}`: use lowercase letters, digits and single `-` between \
             them, starting with a letter (at most 64 characters), e.g. `my-dest`"
        );
    }
    let lib_name = name.replace('-', "_");
    if RESERVED.contains(&name) || is_keyword(&lib_name) {
        bail!("invalid plugin name `{name}`: it is reserved by Rust or cargo");
    }
    Ok(())
}

fn is_keyword(word: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
        "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
        "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub",
        "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type",
        "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
    ];
    KEYWORDS.contains(&word)
}

/// Refuses a path that is a file or a non-empty directory.
fn ensure_empty_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; choose another --dir",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if dir.exists() && !dir.is_dir() => {
            bail!("{} exists and is not a directory ({e})", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// The absolute path of the `sluice-sdk` crate in `path`.
fn sdk_crate(path: &Path) -> anyhow::Result<PathBuf> {
    let path = path
        .canonicalize()
        .with_context(|| format!("no SDK crate at {}", path.display()))?;
    let manifest = std::fs::read_to_string(path.join("Cargo.toml"))
        .with_context(|| format!("no Cargo.toml in {}", path.display()))?;
    let manifest: toml::Table = toml::from_str(&manifest)
        .with_context(|| format!("{}/Cargo.toml is not valid TOML", path.display()))?;
    let name = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str);
    if name != Some("sluice-sdk") {
        bail!("{} is not the sluice-sdk crate", path.display());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["my-dest", "a", "dest2", "a1-b2-c3"] {
            validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "My-Dest", "my_dest", "-dest", "dest-", "my--dest", "2dest", "dé", "a b", "../x",
            "fn", "test", "std", "self",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(validate_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("my-dest"), "MyDest");
        assert_eq!(type_name("a1-b"), "A1B");
        assert_eq!(type_name("webhook"), "Webhook");
    }

    #[test]
    fn templates_fill_every_placeholder() {
        let files = render("my-dest", Some(Path::new("/opt/sluice \"sdk\""))).unwrap();
        for (path, text) in &files {
            assert!(!text.contains("__"), "{path} keeps a placeholder:\n{text}");
        }
        let cargo: toml::Table = toml::from_str(&files[0].1).expect("Cargo.toml is TOML");
        assert_eq!(cargo["package"]["name"].as_str(), Some("my-dest"));
        assert_eq!(
            cargo["dependencies"]["sluice-sdk"].as_str(),
            Some(SDK_VERSION)
        );
        assert_eq!(
            cargo["patch"]["crates-io"]["sluice-sdk"]["path"].as_str(),
            Some("/opt/sluice \"sdk\"")
        );
        let sluice = &cargo["package"]["metadata"]["sluice"];
        assert_eq!(sluice["name"].as_str(), Some("my-dest"));
        assert_eq!(
            sluice["allowed_hosts"][0].as_str(),
            Some("{{ config.url }}")
        );
        assert_eq!(sluice["config"][0]["name"].as_str(), Some("url"));
        assert_eq!(cargo["profile"]["plugin"]["lto"].as_bool(), Some(true));
        assert!(cargo["workspace"].as_table().is_some_and(|w| w.is_empty()));
        assert!(files[1].1.contains("pub struct MyDest {"));

        let released = render("my-dest", None).unwrap();
        let cargo: toml::Table = toml::from_str(&released[0].1).expect("Cargo.toml is TOML");
        assert!(
            !cargo.contains_key("patch"),
            "no override without an SDK path"
        );
    }

    #[test]
    fn the_template_is_a_short_destination() {
        // The promise to plugin authors: a webhook-like destination in under 30 lines.
        let code = LIB_RS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .filter(|l| !matches!(*l, "#[cfg(test)]" | "mod tests;"))
            .count();
        assert!(code < 30, "the template has {code} lines of code");
    }

    #[test]
    fn the_sdk_version_matches_the_sdk_crate() {
        let manifest =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/Cargo.toml"))
                .expect("sdk/Cargo.toml");
        let manifest: toml::Table = toml::from_str(&manifest).expect("TOML");
        let version = manifest["package"]["version"]
            .as_str()
            .expect("explicit version");
        assert!(
            version.starts_with(&format!("{SDK_VERSION}.")),
            "sdk version {version} does not match the template's {SDK_VERSION}"
        );
    }

    #[test]
    fn refuses_a_non_empty_directory_and_writes_an_empty_one() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let opts = |dir: PathBuf| NewOptions {
            name: "my-dest".into(),
            dir: Some(dir),
            sdk_path: None,
        };
        let err = create(&opts(tmp.path().to_path_buf())).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
            "mine"
        );
        let err = create(&opts(tmp.path().join("keep.txt"))).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let created = create(&opts(empty.clone())).unwrap();
        assert_eq!(created.files.len(), 4);
        assert!(empty.join("src/lib.rs").is_file());
        assert!(empty.join("src/tests.rs").is_file());
    }

    #[test]
    fn an_sdk_path_must_be_the_sdk_crate() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(sdk_crate(tmp.path()).is_err());
        std::fs::write(
            tmp.path().join("Cargo.toml"),
            "[package]\nname = \"other\"\n",
        )
        .unwrap();
        assert!(sdk_crate(tmp.path()).is_err());
        std::fs::write(
            tmp.path().join("Cargo.toml"),
            "[package]\nname = \"sluice-sdk\"\n",
        )
        .unwrap();
        assert_eq!(
            sdk_crate(tmp.path()).unwrap(),
            tmp.path().canonicalize().unwrap()
        );
    }
}
