// {{name}}: a Sluice transform plugin. It adds a `greeting` to every JSON record, from the
// record's `name` and the `greeting` setting (default "hello"); a record that is not a JSON
// object fails alone and goes where the pipeline's error policy says (fail, skip or dlq).
import { transform, text, withValue } from "./sluice.js";

let greeting = "hello";

// Called once per instance with the pipeline's settings (`--set greeting=hi`); an error stops
// the plugin from loading and is shown to the user as is.
function setup(settings) {
  if ("greeting" in settings) {
    if (!settings.greeting) throw new Error("greeting is empty: set it to a word, e.g. greeting=hi");
    greeting = settings.greeting;
  }
}

// One record in, one out. Return null to filter, an array to fan out.
function greet(msg) {
  let record;
  try {
    record = JSON.parse(text(msg.value));
  } catch (e) {
    throw new Error(`not a JSON object (${e.message})`);
  }
  if (record === null || typeof record !== "object" || Array.isArray(record)) {
    throw new Error("not a JSON object");
  }
  const name = typeof record.name === "string" ? record.name : "stranger";
  record.greeting = `${greeting}, ${name}`;
  // withValue keeps the key, headers and timestamp.
  return withValue(msg, JSON.stringify(record));
}

// The world's exports, `init` and `process`; the helper handles the wire form.
export const { init, process } = transform(greet, setup);
