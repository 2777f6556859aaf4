// The run form's fields: the text shown for a value reads back as that value, large integers stay exact, and
// a number out of range is refused in the field instead of going as null.
// Run: node --test tests/js/

import assert from "node:assert/strict";
import { test } from "node:test";

import { parseJson, stringifyJson } from "../../src/nbrelay/web/app/json.js";
import { initialText, parseValue } from "../../src/nbrelay/web/app/run.js";

const roundTrip = (kind, value) => parseValue(kind, initialText(kind, value));

test("run again: an untyped string that reads as another value comes back as the same string", () => {
  assert.equal(initialText("any", "123"), '"123"');
  assert.equal(roundTrip("any", "123"), "123");
  for (const value of ["true", "null", "[1]", '"quoted"', "1e999"]) assert.equal(roundTrip("any", value), value);
});

test("untyped text that is not JSON still shows bare and goes as text; JSON values keep their type", () => {
  assert.equal(initialText("any", "hello world"), "hello world");
  assert.equal(parseValue("any", "hello world"), "hello world");
  assert.equal(roundTrip("any", 123), 123);
  assert.deepEqual(roundTrip("any", [1, "a"]), [1, "a"]);
  assert.equal(roundTrip("any", false), false);
});

test("an int past 2^53 is sent as the integer typed", () => {
  const value = parseValue("int", "12345678901234567891");
  assert.equal(stringifyJson({ parameters: { i: value } }), '{"parameters":{"i":12345678901234567891}}');
  assert.equal(stringifyJson({ i: parseValue("int", " -0099999999999999999999 ") }), '{"i":-99999999999999999999}');
  assert.equal(parseValue("int", "42"), 42);
  assert.equal(initialText("int", value), "12345678901234567891");
});

test("a float out of range is refused in its field rather than sent as null", () => {
  assert.throws(() => parseValue("float", "1e999"), /1e999 is out of range/);
  assert.throws(() => parseValue("any", "1e999"), /out of range/);
  assert.throws(() => parseValue("json", "[1e999]"), /out of range/);
  assert.equal(parseValue("float", "1.5e3"), 1500);
});

test("exact JSON: BigInt written as digits; a string that looks like a marker stays a string", () => {
  const text = stringifyJson({ a: 10n ** 25n, b: ["nbrelay-integer-x:1", -5n], c: 1.5 });
  assert.equal(text, '{"a":10000000000000000000000000,"b":["nbrelay-integer-x:1",-5],"c":1.5}');
  assert.equal(parseJson('{"n": 7}').n, 7);
});
