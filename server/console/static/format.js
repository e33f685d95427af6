// Reading the protobuf JSON mapping, and saying it in plain words. Times are shown in UTC,
// the same for every operator looking at one deployment.

const MINUTE = 60 * 1000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** An enum value's name without its prefix; a missing field is the default (UNSPECIFIED). */
export function enumName(value, prefix) {
  const name = typeof value === "string" ? value : `${prefix}UNSPECIFIED`;
  return name.startsWith(prefix) ? name.slice(prefix.length) : name;
}

export const stateName = (value) => enumName(value, "RUNTIME_STATE_");

/** int32 is a JSON number, int64 a JSON string; missing is 0. */
export function int(value) {
  const number = Number(value ?? 0);
  return Number.isFinite(number) ? number : 0;
}

/** A Timestamp (RFC 3339 text) as milliseconds, or null when unset. */
export function millis(timestamp) {
  if (!timestamp) return null;
  const value = Date.parse(timestamp);
  return Number.isNaN(value) ? null : value;
}

/** A Duration ("3600s", "1.5s") as seconds; missing is 0. */
export function seconds(duration) {
  if (!duration) return 0;
  const value = parseFloat(String(duration));
  return Number.isFinite(value) ? value : 0;
}

/** "2027-01-09 00:00 UTC", or "" for an unset time. */
export function dateTime(timestamp) {
  const value = millis(timestamp);
  if (value === null) return "";
  return new Date(value).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/** "2027-01-09", or "" for an unset time. */
export function date(timestamp) {
  const value = millis(timestamp);
  return value === null ? "" : new Date(value).toISOString().slice(0, 10);
}

const plural = (count, unit) => `${count} ${unit}${count === 1 ? "" : "s"}`;

/** How long from `fromMs` to `toMs` in words: "6 days 14 hours", "3 hours 20 minutes". */
export function span(fromMs, toMs) {
  let left = Math.max(0, toMs - fromMs);
  const days = Math.floor(left / DAY);
  left -= days * DAY;
  const hours = Math.floor(left / HOUR);
  left -= hours * HOUR;
  const minutes = Math.floor(left / MINUTE);
  if (days > 0) return hours ? `${plural(days, "day")} ${plural(hours, "hour")}` : plural(days, "day");
  if (hours > 0) return minutes ? `${plural(hours, "hour")} ${plural(minutes, "minute")}` : plural(hours, "hour");
  return plural(minutes, "minute");
}

/** A duration in seconds in words: "2 hours 5 minutes". */
export const durationWords = (secs) => span(0, secs * 1000);

export const days = (count) => plural(count, "day");
export const cores = (count) => plural(count, "core");

/** Replace an element's children with `children` (nodes or text). */
export function fill(element, ...children) {
  element.replaceChildren(...children);
}

/** An element with text and attributes: el("li", { class: "x" }, "text", child). */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children);
  return element;
}

/** Set text only when it changed, so a refresh does not disturb what is on screen. */
export function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}
