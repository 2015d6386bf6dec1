import type { Id } from "./types.js";

/**
 * The decimal string of an id. A `number` must be a non-negative safe integer
 * (larger ids lose precision as numbers: pass them as `string` or `bigint`); a
 * `string` is sent as is (the server validates it and answers 400 naming the field).
 */
export function idString(id: Id, name = "id"): string {
  switch (typeof id) {
    case "string":
      return id;
    case "bigint":
      if (id < 0n) throw new RangeError(`${name}: must not be negative`);
      return id.toString(10);
    case "number":
      if (!Number.isSafeInteger(id) || id < 0) {
        throw new RangeError(`${name}: ${id} is not a non-negative safe integer; pass large ids as a string or bigint`);
      }
      return id.toString(10);
    default:
      throw new TypeError(`${name}: expected a string, bigint or number`);
  }
}
