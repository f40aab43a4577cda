//! The Python and JavaScript guest helpers (`plugins/sdk/python`, `plugins/sdk/js`), run natively
//! by CPython and Node.js: a source that returns more than it was asked for is an error, as in
//! the Rust SDK, never silently cut.

use std::path::PathBuf;
use std::process::Command;

fn sdk(lang: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/sdk")
        .join(lang)
}

/// What both scripts print: the error for 3 messages where 2 were asked for, then that a
/// source returning as many as asked gave a batch (`yes`, in the language's spelling).
fn refused_and_then_fine(out: &std::process::Output, yes: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("source returned 3 messages but at most 2 were asked for"),
        "{text}"
    );
    assert!(text.trim_end().ends_with(yes), "{text}");
}

#[test]
fn a_python_source_that_returns_too_many_fails() {
    let script = r#"
import sys, sluice
World = sluice.source(lambda max, now: [sluice.Message(b"x")] * (max + 1))
try:
    World().next(2, 0)
    print("no error")
except sluice.Err as e:
    print(e.value)
print(len(sluice.source(lambda max, now: [sluice.Message(b"x")] * max)().next(2, 0)) > 0)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", sdk("python"))
        .output()
        .expect("python3 runs");
    refused_and_then_fine(&out, "True");
}

#[test]
fn a_javascript_source_that_returns_too_many_fails() {
    // The host import the helper re-exports, stubbed: Node.js has no component around it.
    let helper = sdk("js").join("sluice.js");
    let script = format!(
        r#"
import {{ register }} from "node:module";
const stub = "data:text/javascript," + encodeURIComponent("export function log() {{}}");
const hooks = `export async function resolve(s, c, next) {{
  return s.startsWith("sluice:plugin/") ? {{ url: "${{stub}}", shortCircuit: true }} : next(s, c);
}}`;
register("data:text/javascript," + encodeURIComponent(hooks));
const {{ source }} = await import({helper:?});
const world = source((max) => Array.from({{ length: max + 1 }}, () => ({{ value: new Uint8Array([120]) }})));
try {{ world.next(2, 0n); console.log("no error"); }} catch (e) {{ console.log(String(e)); }}
const fits = source((max) => Array.from({{ length: max }}, () => ({{ value: new Uint8Array([120]) }})));
console.log(fits.next(2, 0n).length > 0);
"#,
        helper = helper.display().to_string()
    );
    let out = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .output()
        .expect("node runs");
    refused_and_then_fine(&out, "true");
}

/// The JavaScript stateful helper over an in-memory host: a message's writes reach the host
/// only if it succeeds, timers fire with their key, and a scan sees the message's own writes.
#[test]
fn the_javascript_stateful_helper_keeps_a_failed_messages_writes_out() {
    let helper = sdk("js").join("stateful.js");
    let script = format!(
        r#"
import {{ register }} from "node:module";
const host = `
export const store = new Map(); export const timerList = [];
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
export function getMany(keys) {{ return keys.map((k) => store.get(hex(k))); }}
export function putMany(es) {{ for (const e of es) store.set(hex(e.key), e.value); }}
export function deleteMany(keys) {{ for (const k of keys) store.delete(hex(k)); }}
export function scan(prefix, after, max) {{
  const p = hex(prefix);
  return [...store.keys()].filter((k) => k.startsWith(p)).sort()
    .map((k) => [Uint8Array.from(k.match(/../g), (x) => parseInt(x, 16)), store.get(k)]);
}}
export function register(key, at, domain) {{ timerList.push([new TextDecoder().decode(key), at, domain]); }}
export {{ register as delete }};
export function observeEventTime(at) {{}}
export function streamTime() {{ return undefined; }}
export function log() {{}}
`;
const stub = "data:text/javascript," + encodeURIComponent(host);
const hooks = `export async function resolve(s, c, next) {{
  return s.startsWith("sluice:plugin/") ? {{ url: "${{stub}}", shortCircuit: true }} : next(s, c);
}}`;
register("data:text/javascript," + encodeURIComponent(hooks));
const {{ stateful }} = await import({helper:?});
const {{ encodeBatch }} = await import({sluice:?});
const hostModule = await import(stub);
const enc = new TextEncoder();
const world = stateful(
  (msg, ctx) => {{
    const word = new TextDecoder().decode(msg.value);
    ctx.put("n/" + word, "1");
    ctx.registerEventTimer(word, 60000);
    if (word === "bad") throw new Error("refused");
    return null;
  }},
  (t, ctx) => ctx.scan("n/").map(([k]) => ({{ value: k, headers: [] }})),
);
const batch = encodeBatch(["a", "bad", "b"].map((w) => ({{ value: enc.encode(w), headers: [] }})));
world.process(batch);
console.log(JSON.stringify([...hostModule.store.keys()].sort()));
console.log(JSON.stringify(hostModule.timerList.map(([k]) => k)));
const out = world.onTimer([{{ key: enc.encode("a"), atMs: 60000n, domain: "event-time" }}]);
console.log(out.length > 8);
"#,
        helper = helper.display().to_string(),
        sluice = sdk("js").join("sluice.js").display().to_string()
    );
    let out = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .output()
        .expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    // "n/a" and "n/b" (hex), not "n/bad"; timers of a and b only.
    assert_eq!(lines[0], r#"["6e2f61","6e2f62"]"#, "{text}");
    assert_eq!(lines[1], r#"["a","b"]"#, "{text}");
    assert_eq!(lines[2], "true", "{text}");
}
