//! `runtime new`: writes a ready plugin project (Rust, Python or JavaScript; transform, stateful
//! or source world) with a working example, the WIT it builds against, build instructions and golden cases
//! that `runtime test` runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::plugin::World;

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// `runtime new` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct NewArgs {
    /// The plugin's name: letters, digits, `-` and `_`, starting with a letter. The project is
    /// created in ./NAME unless --dir says otherwise.
    pub name: String,
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    #[arg(long, value_enum, default_value_t = WorldArg::Transform)]
    pub world: WorldArg,
    /// Where to create the project (default: ./NAME). Must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Rust: the sluice-sdk crate to depend on (plugins/sdk of the Sluice repository). Default:
    /// the one this runtime was built from, when it is still there.
    #[arg(long, value_name = "DIR", env = "SLUICE_SDK")]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorldArg {
    Transform,
    Source,
    /// A transform with keyed state and timers the runtime keeps.
    Stateful,
}

impl From<WorldArg> for World {
    fn from(w: WorldArg) -> World {
        match w {
            WorldArg::Transform => World::Transform,
            WorldArg::Source => World::Source,
            WorldArg::Stateful => World::Stateful,
        }
    }
}

const WIT: &str = include_str!("../../wit/plugin.wit");
const WIRE: &str = include_str!("../../wit/WIRE.md");
const PY_HELPER: &str = include_str!("../../plugins/sdk/python/sluice.py");
const JS_HELPER: &str = include_str!("../../plugins/sdk/js/sluice.js");
const JS_STATEFUL: &str = include_str!("../../plugins/sdk/js/stateful.js");
const JS_BUILD: &str = include_str!("../../plugins/sdk/js/build.mjs");
/// The tool versions the generated projects pin, as scripts/plugin-tools.sh does.
const COMPONENTIZE_PY: &str = "0.25.1";
const COMPONENTIZE_JS: &str = "0.23.0";

/// Creates the project; returns its directory and what to do next.
pub fn create(args: &NewArgs) -> Result<(PathBuf, String)> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a plugin name: use letters, digits, `-` and `_`, starting with a letter (e.g. my-enrich)"
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} already exists and is not empty: choose another name or --dir, nothing was written",
            dir.display()
        );
    }
    let world = World::from(args.world);
    let source = world == World::Source;
    let stateful = world == World::Stateful;
    // The template of each world, per language.
    let pick =
        |transform: &'static str, source_t: &'static str, stateful_t: &'static str| match world {
            World::Source => source_t,
            World::Stateful => stateful_t,
            World::Transform => transform,
        };
    // Python and JavaScript build tools read the WIT; a Rust plugin gets it from the SDK.
    let mut files: Vec<(&str, String)> = match args.lang {
        Lang::Rust => Vec::new(),
        Lang::Python | Lang::Js => vec![
            ("wit/plugin.wit", WIT.to_owned()),
            ("wit/WIRE.md", WIRE.to_owned()),
        ],
    };
    let cases: &[(&str, &str)] = if stateful {
        &[
            (
                "tests/cases/visits.input.jsonl",
                include_str!("../templates/cases/stateful.input.jsonl"),
            ),
            (
                "tests/cases/visits.expected.jsonl",
                include_str!("../templates/cases/stateful.expected.jsonl"),
            ),
        ]
    } else if source {
        &[
            (
                "tests/cases/counter.settings",
                include_str!("../templates/cases/source.settings"),
            ),
            (
                "tests/cases/counter.expected.jsonl",
                include_str!("../templates/cases/source.expected.jsonl"),
            ),
        ]
    } else {
        &[
            (
                "tests/cases/greet.input.jsonl",
                include_str!("../templates/cases/transform.input.jsonl"),
            ),
            (
                "tests/cases/greet.expected.jsonl",
                include_str!("../templates/cases/transform.expected.jsonl"),
            ),
            (
                "tests/cases/greeting.settings",
                include_str!("../templates/cases/greeting.settings"),
            ),
            (
                "tests/cases/greeting.input.jsonl",
                include_str!("../templates/cases/greeting.input.jsonl"),
            ),
            (
                "tests/cases/greeting.expected.jsonl",
                include_str!("../templates/cases/greeting.expected.jsonl"),
            ),
        ]
    };
    files.extend(cases.iter().map(|(p, t)| (*p, (*t).to_owned())));
    let (wasm, build, unit) = match args.lang {
        Lang::Rust => {
            let sdk = sdk_dir(args.sdk.as_deref())?;
            files.push((
                "Cargo.toml",
                include_str!("../templates/rust/Cargo.toml")
                    .replace("{{sdk}}", &sdk.display().to_string().replace('\\', "/")),
            ));
            let lib = pick(
                include_str!("../templates/rust/transform.rs"),
                include_str!("../templates/rust/source.rs"),
                include_str!("../templates/rust/stateful.rs"),
            );
            files.push(("src/lib.rs", lib.to_owned()));
            files.push((".gitignore", "target/\n".to_owned()));
            let artifact = name.replace('-', "_");
            (
                format!("target/wasm32-wasip2/release/{artifact}.wasm"),
                format!(
                    "    rustup target add wasm32-wasip2   # once\n    cargo build --release --target wasm32-wasip2\n\n\
                     or, with cargo-component, `cargo component build --release` (the plugin is then\n\
                     target/wasm32-wasip1/release/{artifact}.wasm)."
                ),
                "    cargo test".to_owned(),
            )
        }
        Lang::Python => {
            let app = pick(
                include_str!("../templates/python/transform.py"),
                include_str!("../templates/python/source.py"),
                include_str!("../templates/python/stateful.py"),
            );
            let test = pick(
                include_str!("../templates/python/test_transform.py"),
                include_str!("../templates/python/test_source.py"),
                include_str!("../templates/python/test_stateful.py"),
            );
            files.push(("app.py", app.to_owned()));
            files.push(("sluice.py", PY_HELPER.to_owned()));
            files.push(("test_app.py", test.to_owned()));
            files.push((".gitignore", "__pycache__/\n*.wasm\n".to_owned()));
            (
                format!("{name}.wasm"),
                format!(
                    "    pip install componentize-py=={COMPONENTIZE_PY}   # once\n    componentize-py -d wit -w {world} componentize app -o {name}.wasm"
                ),
                "    python -m unittest".to_owned(),
            )
        }
        Lang::Js => {
            let plugin = pick(
                include_str!("../templates/js/transform.js"),
                include_str!("../templates/js/source.js"),
                include_str!("../templates/js/stateful.js"),
            );
            files.push(("plugin.js", plugin.to_owned()));
            files.push(("sluice.js", JS_HELPER.to_owned()));
            if stateful {
                files.push(("stateful.js", JS_STATEFUL.to_owned()));
            }
            files.push(("build.mjs", JS_BUILD.to_owned()));
            files.push((
                "package.json",
                format!(
                    "{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"scripts\": {{\n    \"build\": \"node build.mjs plugin.js wit {world} {name}.wasm\"\n  }},\n  \"devDependencies\": {{\n    \"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS}\"\n  }}\n}}\n"
                ),
            ));
            files.push((".gitignore", "node_modules/\n*.wasm\n".to_owned()));
            (
                format!("{name}.wasm"),
                "    npm install   # once\n    npm run build".to_owned(),
                "the logic is plain JavaScript; the golden cases below test the built plugin"
                    .to_owned(),
            )
        }
    };
    let lang = match args.lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    let run = if source {
        format!("    runtime run --plugin {wasm} --set interval_ms=500 --count 5")
    } else if stateful {
        format!("    echo '{{\"name\":\"ada\"}}' | runtime run --plugin {wasm} --checkpoints file://state")
    } else {
        format!("    echo '{{\"name\":\"ada\"}}' | runtime run --plugin {wasm}")
    };
    let contract = match args.lang {
        Lang::Rust => "the Sluice repository's `wit/plugin.wit`, through the sluice-sdk crate (batches travel in the\nwire form of `wit/WIRE.md`; the SDK hides it)",
        Lang::Python | Lang::Js => "`wit/plugin.wit` (batches travel in the wire form of `wit/WIRE.md`; the helper hides it)",
    };
    files.push((
        "README.md",
        format!(
            "# {name}\n\nA Sluice {world} plugin in {lang}, made by `runtime new`. It builds against the contract in\n\
             {contract}.\n\n\
             ## Build\n\n{build}\n\n## Test\n\nUnit tests of the logic, natively:\n\n{unit}\n\n\
             Golden cases, on the built plugin (`tests/cases`: NAME.input.jsonl, NAME.expected.jsonl and\n\
             optional NAME.settings; see `runtime test --help`):\n\n    runtime test --plugin {wasm} --cases tests/cases\n\n\
             After a deliberate change, `--bless` rewrites the expected files from what the plugin\n\
             returns: review the diff before committing it.\n\n## Run\n\n{run}\n\n\
             Swap it in a running pipeline without losing a record: `runtime run --watch ...` and\n\
             rebuild, or `PUT /pipelines/NAME/plugins/SLOT` on the admin API.\n"
        ),
    ));
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text.replace("{{name}}", name))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let next = format!(
        "created {} ({lang}, {world} world), {} files. Next, in {}:\n\n{build}\n\n    runtime test --plugin {wasm} --cases tests/cases\n",
        dir.display(),
        files.len(),
        dir.display()
    );
    Ok((dir, next))
}

/// The sluice-sdk crate a Rust project depends on, as an absolute path.
fn sdk_dir(given: Option<&Path>) -> Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    let dir = given.unwrap_or(&built_from);
    let manifest = dir.join("Cargo.toml");
    match std::fs::read_to_string(&manifest) {
        Ok(text) if text.contains("name = \"sluice-sdk\"") => dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display())),
        _ => bail!(
            "{} is not the sluice-sdk crate: pass --sdk DIR (or SLUICE_SDK) pointing at plugins/sdk of the Sluice repository",
            dir.display()
        ),
    }
}
