// The usage chart: each evaluated day's peak against the quota, as an SVG drawn here.
// Each day is one keyboard stop at a time (arrow keys move, Enter or Space selects).

import { cores, int, stateName } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 260;
const MIN_SLOT = 22; // the narrowest a day gets; narrower charts scroll sideways
const MARGIN = { top: 22, right: 60, bottom: 50, left: 44 };
const STRIP = 14; // the state strip under each bar
const STATE_LETTER = { NORMAL: "N", DP_CORE_EXCEEDED: "E", RESTRICTED: "R" };

function svg(tag, attributes = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** A whole step of 1, 2 or 5 times a power of ten, at or above `value`. */
function niceStep(value) {
  const magnitude = 10 ** Math.floor(Math.log10(Math.max(1, value)));
  for (const step of [1, 2, 5]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

/** What one day says, for its label and the detail. */
export function dayFacts(day) {
  const peak = int(day.peak_cores);
  const quota = int(day.max_dp_cores);
  const state = stateName(day.state_after);
  return { day: day.day, peak, quota, over: quota > 0 && peak > quota, state };
}

function dayLabel(facts) {
  const quota = facts.quota > 0 ? `of ${cores(facts.quota)}` : "with no license in force";
  const verdict = facts.over ? ", over the quota" : "";
  return `${facts.day}: peak ${cores(facts.peak)} ${quota}${verdict}; state ${facts.state}`;
}

/**
 * Draw `days` (oldest first) into `container`. `onSelect(day)` runs when a day is clicked or
 * chosen by keyboard. Returns nothing; `markSelected` shows the selection without redrawing.
 */
export function renderChart(container, days, selectedDay, onSelect) {
  const hadFocus = container.contains(document.activeElement)
    ? document.activeElement.getAttribute("data-day")
    : null;
  if (days.length === 0) {
    const empty = document.createElement("p");
    empty.className = "muted";
    empty.textContent =
      "No day has been evaluated yet: each day is judged shortly after its midnight.";
    container.replaceChildren(empty);
    return;
  }
  const facts = days.map(dayFacts);
  // drawn at the size it is shown (text stays legible on a phone), at least MIN_SLOT a day
  const width = Math.max(
    container.clientWidth || 760,
    MARGIN.left + MARGIN.right + MIN_SLOT * facts.length,
  );
  const plotWidth = width - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const highest = Math.max(1, ...facts.map((f) => Math.max(f.peak, f.quota))) * 1.1;
  const step = niceStep(highest / 4);
  const ticks = Math.ceil(highest / step);
  const top = step * ticks;
  const y = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;
  const slot = plotWidth / facts.length;
  const barWidth = Math.min(36, slot * 0.7);
  const baseline = MARGIN.top + plotHeight;

  const root = svg("svg", {
    viewBox: `0 0 ${width} ${HEIGHT}`,
    width,
    height: HEIGHT,
    class: "chart",
    role: "group",
    "aria-label": `Peak cores of the last ${facts.length} evaluated days against the quota`,
  });

  // the scale: a grid line every whole step, with its value
  for (let i = 0; i <= ticks; i += 1) {
    const value = step * i;
    root.append(
      svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: MARGIN.left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" }, String(value)),
    );
  }
  root.append(svg("text", { x: 4, y: 12, class: "axis" }, "cores"));

  const labelEvery = Math.ceil((facts.length * 40) / plotWidth); // a label needs about 40 px
  facts.forEach((f, i) => {
    const x0 = MARGIN.left + i * slot;
    const center = x0 + slot / 2;
    const selected = f.day === selectedDay;
    const group = svg("g", {
      class: `day${f.over ? " over" : ""}${selected ? " selected" : ""}`,
      role: "button",
      tabindex: -1,
      "data-day": f.day,
      "aria-pressed": selected ? "true" : "false",
      "aria-label": dayLabel(f),
    });
    group.append(
      svg("title", {}, dayLabel(f)),
      svg("rect", { x: x0 + 1, y: MARGIN.top - 18, width: slot - 2, height: plotHeight + 18 + STRIP + 8, class: "hit" }),
      svg("rect", {
        x: center - barWidth / 2,
        y: y(f.peak),
        width: barWidth,
        height: Math.max(0, baseline - y(f.peak)),
        class: f.over ? "bar over" : "bar within",
      }),
      svg("rect", { x: center - barWidth / 2, y: baseline + 4, width: barWidth, height: STRIP, class: `strip state-${f.state}` }),
      svg("text", { x: center, y: baseline + 4 + STRIP - 3, class: "strip-letter", "text-anchor": "middle" },
        STATE_LETTER[f.state] || "?"),
    );
    if (f.over) {
      group.append(svg("text", { x: center, y: y(f.peak) - 4, class: "over-mark", "text-anchor": "middle" }, "!"));
    }
    if (i % labelEvery === 0 || i === facts.length - 1) {
      group.append(svg("text", { x: center, y: HEIGHT - 14, class: "axis", "text-anchor": "middle" }, f.day.slice(5)));
    }
    group.addEventListener("click", () => onSelect(f.day));
    root.append(group);
  });

  // the quota of each day, as a step line over the bars (no segment where no license was in force)
  let path = "";
  let previous = null;
  facts.forEach((f, i) => {
    const x0 = MARGIN.left + i * slot;
    if (f.quota <= 0) {
      previous = null;
      return;
    }
    path += previous === null ? `M${x0},${y(f.quota)}` : `V${y(f.quota)}`;
    path += `H${x0 + slot}`;
    previous = f.quota;
  });
  if (path) root.append(svg("path", { d: path, class: "quota-line" }));
  const last = facts[facts.length - 1];
  if (last.quota > 0) {
    root.append(svg("text", { x: width - MARGIN.right + 6, y: y(last.quota) + 4, class: "quota-label" },
      `quota ${last.quota}`));
  }

  root.addEventListener("keydown", (event) => {
    const groups = [...root.querySelectorAll("g.day")];
    const at = groups.indexOf(document.activeElement);
    if (at < 0) return;
    let next = at;
    if (event.key === "ArrowLeft" || event.key === "ArrowUp") next = Math.max(0, at - 1);
    else if (event.key === "ArrowRight" || event.key === "ArrowDown") next = Math.min(groups.length - 1, at + 1);
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = groups.length - 1;
    else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      onSelect(groups[at].getAttribute("data-day"));
      return;
    } else return;
    event.preventDefault();
    moveFocus(groups, next);
  });

  container.replaceChildren(root);
  const groups = [...root.querySelectorAll("g.day")];
  // one tab stop: the selected day, else the newest
  const stop = groups.find((g) => g.getAttribute("data-day") === (hadFocus || selectedDay)) ||
    groups[groups.length - 1];
  stop.setAttribute("tabindex", "0");
  if (hadFocus && stop.getAttribute("data-day") === hadFocus) stop.focus();
}

function moveFocus(groups, index) {
  for (const g of groups) g.setAttribute("tabindex", "-1");
  groups[index].setAttribute("tabindex", "0");
  groups[index].focus();
}

/** Show `day` as the selected one, without redrawing. */
export function markSelected(container, day) {
  for (const group of container.querySelectorAll("g.day")) {
    const selected = group.getAttribute("data-day") === day;
    group.classList.toggle("selected", selected);
    group.setAttribute("aria-pressed", selected ? "true" : "false");
  }
}
