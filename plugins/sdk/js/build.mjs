// Builds a JavaScript plugin into a component with componentize-js:
//   node build.mjs SOURCE.js WIT_DIR WORLD OUT.wasm
// WASI features the runtime does not grant plugins (clocks, random, stdio, http) are left out,
// so the component imports only what Sluice provides.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const [source, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node build.mjs SOURCE.js WIT_DIR WORLD OUT.wasm");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: source,
  witPath,
  worldName,
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await writeFile(out, component);
console.error(`${out}: ${component.length} bytes`);
