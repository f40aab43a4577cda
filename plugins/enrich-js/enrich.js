// The enrich rule of plugins/enrich, as a JavaScript plugin (jco componentize).
//
// Adds `country` and `country_code` looked up from (latitude, longitude) rounded to 4 decimals,
// `status` ("accepted" for Greece, else "rejected"), and renders `timestamp` (epoch seconds) as
// `YYYY-MM-DD HH:MM:SS+0000`. Passes the same golden cases as the Rust plugin
// (plugins/enrich/tests/cases).
import { transform, text, withValue } from "./sluice.js";

// "latitude,longitude" in 1e-4 degrees -> [country, ISO code]
const COUNTRIES = new Map([
  ["390000,220000", ["Greece", "GR"]],
  ["430000,250000", ["Bulgaria", "BG"]],
  ["410000,200000", ["Albania", "AL"]],
  ["350000,330000", ["Cyprus", "CY"]],
  ["540000,-20000", ["United Kingdom", "GB"]],
  ["380000,-970000", ["United States", "US"]],
  ["510000,90000", ["Germany", "DE"]],
  ["460000,20000", ["France", "FR"]],
  ["428333,128333", ["Italy", "IT"]],
  ["440000,210000", ["Serbia", "RS"]],
  ["451667,155000", ["Croatia", "HR"]],
  ["525000,57500", ["Netherlands", "NL"]],
  ["390000,350000", ["Turkey", "TR"]],
  ["400000,-40000", ["Spain", "ES"]],
  ["520000,200000", ["Poland", "PL"]],
  ["395000,-80000", ["Portugal", "PT"]],
  ["620000,150000", ["Sweden", "SE"]],
  ["497500,155000", ["Czech Republic", "CZ"]],
  ["560000,100000", ["Denmark", "DK"]],
  ["473333,133333", ["Austria", "AT"]],
  ["590000,260000", ["Estonia", "EE"]],
]);

// Years 0000 through 9999, the ones with a four-digit rendering.
const FIRST = -62167219200, LAST = 253402300799;

// Like Rust's f64::round (Math.round rounds -0.5 up to -0).
const roundHalfAway = (x) => Math.sign(x) * Math.floor(Math.abs(x) + 0.5);

export function countryAt(latitude, longitude) {
  const key = `${roundHalfAway(latitude * 1e4)},${roundHalfAway(longitude * 1e4)}`;
  return COUNTRIES.get(key) || ["Unknown", "Unknown"];
}

const div = (a, b) => Math.floor(a / b);
const mod = (a, b) => a - b * Math.floor(a / b);
const pad = (v, n = 2) => String(v).padStart(n, "0");

// Epoch seconds -> `YYYY-MM-DD HH:MM:SS+0000`, proleptic Gregorian (H. Hinnant's algorithm;
// Date renders years before 1000 and after 9999 differently).
export function formatTimestamp(epochSeconds) {
  const days = div(epochSeconds, 86400), secs = mod(epochSeconds, 86400);
  const z = days + 719468;
  const era = div(z, 146097), doe = mod(z, 146097);
  const yoe = div(doe - div(doe, 1460) + div(doe, 36524) - div(doe, 146096), 365);
  const doy = doe - (365 * yoe + div(yoe, 4) - div(yoe, 100));
  const mp = div(5 * doy + 2, 153);
  const d = doy - div(153 * mp + 2, 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return `${pad(y, 4)}-${pad(m)}-${pad(d)} ${pad(div(secs, 3600))}:${pad(div(mod(secs, 3600), 60))}:${pad(mod(secs, 60))}+0000`;
}

function number(session, name) {
  if (!(name in session)) throw new Error(`field \`${name}\` is missing`);
  const v = session[name];
  if (typeof v !== "number") throw new Error(`field \`${name}\` is not a number`);
  return v;
}

export function enrich(value) {
  let session;
  try {
    session = JSON.parse(text(value));
  } catch (e) {
    throw new Error(`record is not valid JSON: ${e.message}`);
  }
  if (session === null || typeof session !== "object" || Array.isArray(session)) {
    throw new Error("record is not a JSON object");
  }
  const [country, code] = countryAt(number(session, "latitude"), number(session, "longitude"));
  const ts = Math.floor(number(session, "timestamp"));
  if (!(ts >= FIRST && ts <= LAST)) {
    throw new Error(`field \`timestamp\` is out of range (years 0000-9999): ${ts}`);
  }
  session.timestamp = formatTimestamp(ts);
  session.country = country;
  session.country_code = code;
  session.status = country === "Greece" ? "accepted" : "rejected";
  return JSON.stringify(session);
}

export const { init, process } = transform((msg) => withValue(msg, enrich(msg.value)));
