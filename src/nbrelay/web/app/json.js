// JSON that keeps integers exact. A JavaScript number rounds integers past 2^53 (12345678901234567891 becomes
// 12345678901234567000), but the API takes and stores any JSON integer: such integers live here as BigInt and
// are written back as their digits.

/** JSON.stringify that writes BigInt values as plain JSON integers (JSON.stringify alone throws on them). */
export function stringifyJson(value, space) {
  // A BigInt goes out as a quoted marker, then the quotes and marker are dropped from the text. The random
  // part makes sure no string the user typed can pass for a marker.
  const marker = `nbrelay-integer-${Math.random().toString(36).slice(2)}:`;
  const text = JSON.stringify(value, (key, v) => (typeof v === "bigint" ? `${marker}${v}` : v), space);
  return text === undefined ? text : text.replaceAll(new RegExp(`"${marker}(-?\\d+)"`, "g"), "$1");
}

/**
 * JSON.parse that keeps integers past 2^53 exact, as BigInt, where the browser lets a reviver see a number's
 * source text (Chromium, Firefox); elsewhere they round as before. A number too large for a float (1e999) would
 * become Infinity, sent as null: it throws a RangeError instead.
 */
export function parseJson(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value !== "number") return value;
    if (!Number.isFinite(value)) throw new RangeError(`${context?.source ?? "a number"} is out of range`);
    const source = context?.source;
    return Number.isSafeInteger(value) || !source || !/^-?\d+$/.test(source) ? value : BigInt(source);
  });
}

/** "-0012" → 12 as a number when that is exact, else as a BigInt. The text must be an integer. */
export function exactInteger(text) {
  const integer = BigInt(text.trim());
  return Number.isSafeInteger(Number(integer)) ? Number(integer) : integer;
}
