//! `runtime new`: every language and world makes a project that builds as its README says, whose
//! native unit tests pass and whose built plugin passes its own golden cases in `runtime test`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{error_line, run, stdout, target_dir};

fn new_project(dir: &Path, name: &str, lang: &str, world: &str) -> PathBuf {
    let project = dir.join(name);
    let out = run(
        &[
            "new",
            name,
            "--lang",
            lang,
            "--world",
            world,
            "--dir",
            project.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        stdout(&out).contains("runtime test --plugin"),
        "{}",
        stdout(&out)
    );
    project
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn passes_its_cases(plugin: &Path, project: &Path) {
    let out = run(
        &[
            "test",
            "--plugin",
            plugin.to_str().unwrap(),
            "--cases",
            project.join("tests/cases").to_str().unwrap(),
        ],
        b"",
    );
    let report = stdout(&out);
    assert!(out.status.success(), "{report}{}", common::stderr(&out));
    assert!(report.contains(", 0 differ"), "{report}");
}

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/plugin-tools.sh")
}

#[test]
fn rust_projects_build_unit_test_and_pass_their_cases() {
    let dir = tempfile::tempdir().unwrap();
    // Its own target dir: the workspace's is locked while cargo runs this test.
    let target = target_dir().join("scaffold-test");
    for world in ["transform", "source", "stateful"] {
        let name = format!("my-{world}");
        let project = new_project(dir.path(), &name, "rust", world);
        let cargo = || {
            let mut c = Command::new(env!("CARGO"));
            c.current_dir(&project).env("CARGO_TARGET_DIR", &target);
            c
        };
        ok(cargo().args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"]));
        ok(cargo().args(["test", "--quiet"]));
        let wasm = target.join(format!("wasm32-wasip2/release/my_{world}.wasm"));
        passes_its_cases(&wasm, &project);
    }
}

#[test]
fn python_projects_build_unit_test_and_pass_their_cases() {
    let dir = tempfile::tempdir().unwrap();
    for world in ["transform", "source", "stateful"] {
        let project = new_project(dir.path(), &format!("py-{world}"), "python", world);
        // The logic tests natively: the helper works without a component around it.
        ok(Command::new("python3")
            .args(["-m", "unittest", "-q"])
            .current_dir(&project));
        let wasm = project.join("plugin.wasm");
        ok(Command::new("bash").arg(tools()).args([
            "python",
            project.to_str().unwrap(),
            world,
            wasm.to_str().unwrap(),
        ]));
        passes_its_cases(&wasm, &project);
    }
}

#[test]
fn javascript_projects_build_and_pass_their_cases() {
    let dir = tempfile::tempdir().unwrap();
    for world in ["transform", "source", "stateful"] {
        let project = new_project(dir.path(), &format!("js-{world}"), "js", world);
        let package: serde_json::Value =
            serde_json::from_slice(&std::fs::read(project.join("package.json")).unwrap()).unwrap();
        assert_eq!(
            package["scripts"]["build"],
            format!("node build.mjs plugin.js wit {world} js-{world}.wasm")
        );
        let wasm = project.join("plugin.wasm");
        ok(Command::new("bash").arg(tools()).args([
            "js",
            project.join("plugin.js").to_str().unwrap(),
            world,
            wasm.to_str().unwrap(),
        ]));
        passes_its_cases(&wasm, &project);
    }
}

#[test]
fn bad_names_existing_directories_and_a_missing_sdk_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&["new", "9lives", "--dir", d], b"");
    assert_eq!(
        error_line(&out),
        "error: `9lives` is not a plugin name: use letters, digits, `-` and `_`, starting with a letter (e.g. my-enrich)"
    );
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let out = run(&["new", "p", "--dir", d, "--lang", "python"], b"");
    assert!(
        error_line(&out).contains(
            "already exists and is not empty: choose another name or --dir, nothing was written"
        ),
        "{}",
        error_line(&out)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "new",
            "p",
            "--dir",
            empty.path().to_str().unwrap(),
            "--sdk",
            d,
        ],
        b"",
    );
    assert!(
        error_line(&out).contains("is not the sluice-sdk crate: pass --sdk DIR"),
        "{}",
        error_line(&out)
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}
