//! The command line and pipelines files, parsed and checked.

use std::path::{Path, PathBuf};

use super::args::{parse_key_value, parse_rate};
use super::file::parse_pipelines;
use super::RunArgs;
use crate::failure::ErrorPolicy;
use crate::plugin::Capabilities;

#[test]
fn key_values() {
    assert_eq!(parse_key_value("seed=42"), Ok(("seed".into(), "42".into())));
    assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert!(parse_key_value("seed").unwrap_err().contains("KEY=VALUE"));
    assert!(parse_key_value("=1").is_err());
}

fn args(extra: &[&str]) -> RunArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }
    let argv = ["runtime"].iter().chain(extra).copied();
    <Cli as clap::Parser>::parse_from(argv).run
}

#[test]
fn rates() {
    assert_eq!(parse_rate("0"), Ok(0.0));
    assert!(parse_rate("-3").is_err());
    assert!(parse_rate("NaN").is_err());
}

const STACK: &str = r#"
        [endpoints]
        raw = "file://data/raw?format=parquet"
        topic = "mem://sessions"

        [[pipeline]]
        name = "gen"
        plugins = ["plugins/mock.wasm"]
        sink = "raw"
        rate = 100
        settings = { seed = 42, region = "eu" }

        [[pipeline]]
        name = "copy"
        source = "topic"
        sink = "stdout"
        on_error = "skip"
        state = "state.json"
    "#;

#[test]
fn pipelines_file() {
    let specs = parse_pipelines(STACK, Path::new("/etc/sluice"), &[], &args(&[])).unwrap();
    assert_eq!(specs.len(), 2);
    assert_eq!(
        specs[0].plugins,
        [PathBuf::from("/etc/sluice/plugins/mock.wasm")]
    );
    assert_eq!(specs[0].sink, "file:///etc/sluice/data/raw?format=parquet");
    assert_eq!(specs[0].rate, Some(100.0));
    assert_eq!(
        specs[0].settings,
        [("region".into(), "eu".into()), ("seed".into(), "42".into())]
    );
    assert_eq!(specs[1].source.as_deref(), Some("mem://sessions"));
    assert_eq!(specs[1].on_error, ErrorPolicy::Skip);
    assert_eq!(
        specs[1].state,
        Some(PathBuf::from("/etc/sluice/state.json"))
    );
    assert_eq!(specs[1].batch_size, 1024);
}

#[test]
fn outputs_map_names_to_uris_or_endpoints() {
    let text = r#"
            [endpoints]
            lake = "file://lake?format=parquet"

            [[pipeline]]
            name = "p"
            sink = "stdout"
            outputs = { rejected = "kafka://127.0.0.1:9092/rejected", audit = "lake" }
        "#;
    let specs = parse_pipelines(text, Path::new("/x"), &[], &args(&[])).unwrap();
    assert_eq!(
        specs[0].outputs,
        [
            (
                "audit".to_owned(),
                "file:///x/lake?format=parquet".to_owned()
            ),
            (
                "rejected".to_owned(),
                "kafka://127.0.0.1:9092/rejected".to_owned()
            )
        ]
    );
    let bad = text.replace("\"lake\" }", "\"nowhere\" }");
    let e = parse_pipelines(&bad, Path::new("/x"), &[], &args(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("output `audit` `nowhere` is neither a URI nor a name under [endpoints]"),
        "{e}"
    );
}

#[test]
fn plugins_can_set_their_own_limits_and_settings() {
    let text = r#"
            [[pipeline]]
            name = "p"
            sink = "stdout"
            memory_limit_mib = 64
            settings = { seed = 1, mode = "a" }
            plugins = ["a.wasm", { path = "b.wasm", memory_limit_mib = 16, fuel = 1000, capabilities = ["clock"], settings = { mode = "b" } }]
        "#;
    let specs = parse_pipelines(text, Path::new("/x"), &[], &args(&[])).unwrap();
    let p = &specs[0];
    assert_eq!(
        p.plugins,
        [PathBuf::from("/x/a.wasm"), PathBuf::from("/x/b.wasm")]
    );
    assert_eq!(
        (p.plugin_limits(0).memory_bytes, p.plugin_limits(0).fuel),
        (64 << 20, None)
    );
    let b = p.plugin_limits(1);
    assert_eq!((b.memory_bytes, b.fuel), (16 << 20, Some(1000)));
    assert_eq!(
        b.capabilities,
        Some(Capabilities {
            clock: true,
            random: false
        })
    );
    assert_eq!(
        p.plugin_settings(0),
        [("mode".into(), "a".into()), ("seed".into(), "1".into())]
    );
    assert_eq!(
        p.plugin_settings(1),
        [("seed".into(), "1".into()), ("mode".into(), "b".into())]
    );
    assert!(p.uses_fuel());
    let bad = text.replace("fuel = 1000", "fuel = 0");
    let e = parse_pipelines(&bad, Path::new("/x"), &[], &args(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fuel: give fuel >= 1"), "{e}");
    let bad = text.replace("fuel = 1000", "fuels = 1000");
    assert!(parse_pipelines(&bad, Path::new("/x"), &[], &args(&[])).is_err());
}

#[test]
fn endpoints_are_overridden_by_name() {
    let over = [(
        "topic".to_owned(),
        "kafka://127.0.0.1:9092/sessions".to_owned(),
    )];
    let specs = parse_pipelines(STACK, Path::new("."), &over, &args(&[])).unwrap();
    assert_eq!(
        specs[1].source.as_deref(),
        Some("kafka://127.0.0.1:9092/sessions")
    );
    // A misspelt --endpoint is an error, not ignored.
    let a = args(&["--config", "x.toml", "--endpoint", "topik=mem://x"]);
    let e = parse_pipelines(STACK, Path::new("."), &a.endpoints, &a)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the file has no endpoint `topik`"), "{e}");
}

#[test]
fn bad_pipelines_files_say_where_and_what() {
    let bad = |text: &str| {
        parse_pipelines(text, Path::new("."), &[], &args(&[]))
            .unwrap_err()
            .to_string()
    };
    let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"nowhere\"\n");
    assert!(
        e.contains("sink `nowhere` is neither a URI nor a name under [endpoints]"),
        "{e}"
    );
    let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\nbatch = 3\n");
    assert!(e.contains("unknown field `batch`"), "{e}");
    assert!(e.contains("line 4"), "{e}");
    let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\nbatch_size = 0\n");
    assert!(
        e.contains("pipeline `a`: batch_size: use 1 to 65536"),
        "{e}"
    );
    let e = bad("");
    assert!(e.contains("no pipelines"), "{e}");
    let e = bad("[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\n[[pipeline]]\nname = \"a\"\nsink = \"stdout\"\n");
    assert!(e.contains("two pipelines are named `a`"), "{e}");
}
