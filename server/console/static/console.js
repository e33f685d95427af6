// The license console: sign in, status, usage chart, upload with a what-if before Activate.
// It refreshes every few seconds by updating what changed in place: the upload panel and the
// selected day are never redrawn under the operator's hands.

import {
  ApiError, detectRole, getDay, getStatus, getUsage, token, uploadLicense, validateLicense,
} from "./api.js";
import { dayFacts, markSelected, renderChart } from "./chart.js";
import {
  cores, dateTime, days, durationWords, el, enumName, fill, int, millis, seconds, setText,
  span, stateName,
} from "./format.js";

const REFRESH_MS = 5000;
const CHART_DAYS = 30;
const TIMELINE_LENGTH = 10;
const MAX_LICENSE_BYTES = 1024 * 1024;

const $ = (id) => document.getElementById(id);

const view = {
  role: null, // "admin" or "control-plane"
  timer: null,
  refreshing: false,
  refreshAgain: false,
  firstStatus: true,
  licenseActive: null,
  chartKey: "",
  chartDays: [],
  chartWidth: 0,
  timelineKey: "",
  warningsKey: "",
  selectedDay: null,
  checkedText: null, // the license text the last dry run found valid: what Activate applies
};

// --- signing in and out ---

function showSignIn(message) {
  clearTimeout(view.timer);
  view.timer = null;
  $("console").hidden = true;
  $("session").hidden = true;
  $("sign-in").hidden = false;
  const error = $("sign-in-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").focus();
}

function signInError(error) {
  if (error instanceof ApiError && error.httpStatus === 401) {
    return `The token was not accepted (${error.reason || "UNAUTHENTICATED"}): ${error.message}`;
  }
  if (error instanceof ApiError) return `Could not sign in (${error.describe()})`;
  return "Could not sign in: the server's answer was not understood";
}

async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  // a token pasted with its header's "Bearer " is the same token
  const secret = input.value.trim().replace(/^Bearer\s+/i, "");
  if (!secret) {
    showSignIn("Enter a bearer token: an admin or control-plane token.");
    return;
  }
  const button = $("sign-in-button");
  button.disabled = true;
  try {
    const role = await detectRole(secret);
    token.set(secret);
    input.value = "";
    start(role);
  } catch (error) {
    showSignIn(signInError(error));
  } finally {
    button.disabled = false;
  }
}

function signOut(message) {
  token.clear();
  Object.assign(view, {
    role: null, firstStatus: true, licenseActive: null, chartKey: "", chartDays: [], timelineKey: "",
    warningsKey: "", selectedDay: null, checkedText: null,
  });
  resetUpload();
  fill($("day-detail"));
  fill($("chart"));
  showSignIn(message);
}

function start(role) {
  view.role = role;
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("session").hidden = false;
  $("role-label").textContent =
    role === "admin" ? "Signed in: admin" : "Signed in: control plane (read only)";
  const admin = role === "admin";
  $("upload-form-area").hidden = !admin;
  $("upload-read-only").hidden = admin;
  $("activate").hidden = true;
  refresh();
}

// --- refreshing ---

async function refresh() {
  clearTimeout(view.timer);
  if (!view.role) return;
  if (view.refreshing) {
    // what is in flight may have been read before a change just made: read again after it
    view.refreshAgain = true;
    return;
  }
  view.refreshing = true;
  view.refreshAgain = false;
  try {
    const [status, history] = await Promise.all([getStatus(), getUsage(CHART_DAYS)]);
    if (!view.role) return;
    $("refresh-error").hidden = true;
    renderStatus(status);
    renderUsage(history);
  } catch (error) {
    if (error instanceof ApiError && error.httpStatus === 401) {
      signOut(`Signed out: the token is no longer accepted (${error.describe()}).`);
      return;
    }
    const banner = $("refresh-error");
    banner.textContent = `Could not refresh (${error instanceof ApiError ? error.describe() : error}); ` +
      "showing what was last read, and trying again.";
    banner.hidden = false;
  } finally {
    view.refreshing = false;
    if (view.role) view.timer = setTimeout(refresh, view.refreshAgain ? 0 : REFRESH_MS);
  }
}

// --- status ---

const STATE_MEANING = {
  NORMAL: "Core usage is within the license: configuration writes are allowed.",
  DP_CORE_EXCEEDED:
    "Core usage is over the license: writes are still allowed, with a warning, until the grace period ends.",
  RESTRICTED:
    "The grace period ended with usage still over the license: creating and updating configuration is blocked; reads and deletes still work.",
  UNSPECIFIED: "The service has not judged the state yet.",
};

function whyNoLicense(status) {
  const license = status.license;
  const pending = status.pending_license;
  const waiting = pending
    ? ` License ${pending.serial_number} is waiting: it takes over on ${dateTime(pending.effective_time)}.`
    : "";
  if (!license) return `No license has been installed yet.${waiting}`;
  if (int(status.days_until_expiration) < 0 || (millis(license.end_time) ?? Infinity) <= serverNow(status)) {
    return `License ${license.serial_number} ended on ${dateTime(license.end_time)}.${waiting}`;
  }
  return `License ${license.serial_number} is not in force.${waiting}`;
}

/** The time the service judges against (it never moves back), as milliseconds. */
function serverNow(status) {
  return millis(status.clock?.high_water_time) ?? millis(status.clock?.system_time) ?? Date.now();
}

function renderStatus(status) {
  const active = status.license_valid === true;
  const deploymentId = status.deployment_id || "";
  if ($("deployment-id").value !== deploymentId) $("deployment-id").value = deploymentId;

  // the upload prompt when no license is active, opened when that becomes so (never forced
  // open again while the operator has it closed)
  $("prompt").hidden = active;
  if (!active) {
    setText($("prompt-reason"), whyNoLicense(status));
    setText($("prompt-action"), view.role === "admin"
      ? "Creating and updating configuration is blocked until a license is active; reads and deletes still work. Upload a license below."
      : "Creating and updating configuration is blocked until a license is active. Ask an administrator to upload one; send the vendor the deployment ID below.");
  }
  if (view.licenseActive !== active) {
    $("upload").open = !active;
    let title = active ? "Upload a new license" : "Upload a license";
    if (view.role !== "admin") title = "Upload a license (admin only)";
    setText($("upload-title"), title);
  }
  if (view.firstStatus && !active) $("prompt").focus();
  view.licenseActive = active;
  view.firstStatus = false;

  const state = stateName(status.state);
  const badge = $("state-badge");
  setText(badge, state);
  badge.className = `badge state-${state}`;
  $("license-badge").hidden = active;
  setText($("state-meaning"), active ? STATE_MEANING[state] || "" :
    "No license is active: creating and updating configuration is blocked; reads and deletes still work.");

  renderClock(status);
  renderGrace(status);
  renderExpiry(status);
  renderCores(status);
  renderWarnings(status.warnings || []);
  renderLicense(status);
}

function renderClock(status) {
  const clock = status.clock || {};
  const box = $("clock-warning");
  box.hidden = !clock.moved_back;
  if (!clock.moved_back) return;
  const step = seconds(clock.last_backward_step);
  setText(box, `The system clock moved back${step ? ` by ${durationWords(step)}` : ""}` +
    `${clock.last_backward_step_time ? ` at ${dateTime(clock.last_backward_step_time)}` : ""}. ` +
    `Expiry and grace are judged against the latest time seen, ${dateTime(clock.high_water_time)}: ` +
    "setting the clock back never extends a license or a grace period.");
}

function renderGrace(status) {
  const graceEnd = status.grace_end_time || "";
  const episodeEnd = status.episode_grace_end_time || "";
  const card = $("grace-card");
  card.hidden = !graceEnd && !episodeEnd;
  if (card.hidden) return;
  const end = graceEnd || episodeEnd;
  setText($("grace-end"), dateTime(end));
  $("grace-end").setAttribute("datetime", end);
  const left = millis(end) - serverNow(status);
  let countdown;
  if (!graceEnd) {
    countdown = "Usage is back within the license, but the overage episode stays open until a " +
      "midnight judges a day within the quota: going over again resumes this grace period.";
  } else if (left > 0) {
    countdown = `${span(0, left)} left`;
  } else {
    countdown = "Ended: creating and updating configuration is blocked from the next midnight " +
      "unless that day is back within the quota.";
  }
  setText($("grace-countdown"), countdown);
}

function renderExpiry(status) {
  const license = status.license;
  if (!license) {
    setText($("expiry"), "No license installed.");
    return;
  }
  const left = int(status.days_until_expiration);
  const end = dateTime(license.end_time || license.expiration_time);
  let text;
  if (left < 0 || !status.license_valid) text = `Ended on ${end}.`;
  else if (left === 0) text = `Ends today, ${end}.`;
  else text = `${days(left)} until it ends, on ${end}.`;
  setText($("expiry"), text);
}

function renderCores(status) {
  const current = int(status.current_total_cores);
  const quota = int(status.license?.max_dp_cores);
  setText($("current-cores"), quota > 0 ? `${current} of ${cores(quota)}` : cores(current));
  const meter = $("cores-meter");
  meter.max = Math.max(quota, current, 1);
  meter.value = current;
  if (quota > 0) {
    meter.high = quota;
    meter.optimum = 0;
  }
  const live = int(status.live_instances);
  setText($("live-instances"), `${live} live instance${live === 1 ? "" : "s"}`);
}

function renderWarnings(warnings) {
  const key = JSON.stringify(warnings);
  if (key === view.warningsKey) return;
  view.warningsKey = key;
  fill($("warnings"), ...warnings.map((warning) => {
    const kind = enumName(warning.kind, "WARNING_KIND_");
    return el("li", { class: `warning kind-${kind}` }, el("strong", {}, kind), " ", warning.message || "");
  }));
}

function renderLicense(status) {
  const license = status.license;
  $("no-license-properties").hidden = Boolean(license);
  $("license-properties").hidden = !license;
  if (license) {
    setText($("prop-serial"), license.serial_number || "");
    setText($("prop-customer"), license.customer || "");
    setText($("prop-effective"), dateTime(license.effective_time));
    let expiration = dateTime(license.expiration_time);
    if (license.end_time && license.end_time !== license.expiration_time) {
      expiration += ` (ends here ${dateTime(license.end_time)})`;
    }
    setText($("prop-expiration"), expiration);
    setText($("prop-max-cores"), String(int(license.max_dp_cores)));
    setText($("prop-features"), (license.features || []).join(", ") || "none");
    setText($("prop-deployment"), license.deployment_id || "");
    setText($("prop-trial"), license.free_trial ? "yes" : "no");
    const source = enumName(status.license_source, "LICENSE_SOURCE_");
    const applied = status.license_applied_time ? `, applied ${dateTime(status.license_applied_time)}` : "";
    setText($("prop-source"), `${source === "FILE" ? "license file" : "upload"}${applied}`);
  }
  const pending = status.pending_license;
  $("pending-license").hidden = !pending;
  if (pending) {
    setText($("pending-license"), `Pending: license ${pending.serial_number} (${cores(int(pending.max_dp_cores))}) ` +
      `takes over by itself on ${dateTime(pending.effective_time)}.`);
  }
}

// --- usage ---

function renderUsage(history) {
  const newestFirst = history.days || [];
  const oldestFirst = [...newestFirst].reverse();
  const quota = int(history.max_dp_cores);
  const over = newestFirst.filter((day) => dayFacts(day).over).length;
  setText($("usage-summary"), newestFirst.length
    ? `The last ${days(newestFirst.length)} evaluated; quota now ${quota ? cores(quota) : "none"}; ` +
      `${days(over)} over the quota.`
    : "");
  const key = JSON.stringify([newestFirst, quota]);
  if (key !== view.chartKey) {
    view.chartKey = key;
    view.chartDays = oldestFirst;
    drawChart();
  }
  renderTimeline(history.state_changes || []);
}

function drawChart() {
  const container = $("chart");
  view.chartWidth = container.clientWidth;
  renderChart(container, view.chartDays, view.selectedDay, selectDay);
}

// the chart is drawn at the width it is shown: redraw it when that changes
new ResizeObserver(() => {
  if (view.chartDays.length && $("chart").clientWidth !== view.chartWidth) drawChart();
}).observe($("chart"));

function renderTimeline(changes) {
  const shown = changes.slice(0, TIMELINE_LENGTH).reverse(); // oldest of the newest first
  const key = JSON.stringify(shown);
  if (key === view.timelineKey) return;
  view.timelineKey = key;
  if (!shown.length) {
    fill($("timeline"), el("li", { class: "muted" }, "No state change recorded yet."));
    return;
  }
  fill($("timeline"), ...shown.map((change) => {
    const after = stateName(change.state_after);
    const grace = change.grace_end_time ? `; grace ends ${dateTime(change.grace_end_time)}` : "";
    return el("li", {},
      el("time", { datetime: change.change_time || "" }, dateTime(change.change_time)), " ",
      stateName(change.state_before), " → ", el("span", { class: `badge small state-${after}` }, after),
      ` (${change.cause || "no cause recorded"}${grace})`);
  }));
}

async function selectDay(day) {
  view.selectedDay = day;
  markSelected($("chart"), day);
  const detail = $("day-detail");
  fill(detail, el("p", { class: "muted" }, `Loading ${day}…`));
  let answer;
  try {
    answer = await getDay(day);
  } catch (error) {
    if (view.selectedDay === day) {
      fill(detail, el("p", { class: "error" }, `Could not load ${day} (${error instanceof ApiError ? error.describe() : error}).`));
    }
    return;
  }
  if (view.selectedDay !== day) return; // another day was chosen meanwhile
  const found = (answer.days || [])[0];
  if (!found) {
    fill(detail, el("p", { class: "muted" }, `${day} has not been evaluated.`));
    return;
  }
  renderDay(detail, found);
}

/** How long the service ran within the day, in words. */
function ranWords(day) {
  const ran = seconds(day.observed_duration);
  const length = ((millis(day.end_time) ?? 0) - (millis(day.start_time) ?? 0)) / 1000;
  if (length > 0 && ran >= length - 1) return "The service ran all day";
  return `The service ran ${durationWords(ran)} of the day`;
}

function renderDay(detail, day) {
  const facts = dayFacts(day);
  const instances = day.peak_instances || [];
  const lines = [
    `Peak ${cores(facts.peak)}${facts.quota ? ` against a quota of ${facts.quota}` : " with no license in force"}` +
      `${facts.over ? ": over the quota" : ""}.`,
    `State ${stateName(day.state_before)} → ${facts.state}` +
      `${day.grace_end_time ? `; grace ends ${dateTime(day.grace_end_time)}` : ""}.`,
    day.peak_time ? `Peak reached at ${dateTime(day.peak_time)}.` : "No usage reported that day.",
    `${ranWords(day)}${day.observed ? "" : " (not observed: a day within the quota proves nothing)"}.`,
  ];
  const table = el("table", { class: "instances" },
    el("caption", {}, `Instances at the peak of ${facts.day}`),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Instance ID"), el("th", { scope: "col" }, "Cores"))),
    el("tbody", {}, ...instances.map((instance) =>
      el("tr", {}, el("td", {}, instance.instance_id || ""), el("td", {}, String(int(instance.cores)))))));
  fill(detail,
    el("h3", {}, facts.day),
    el("ul", { class: "facts" }, ...lines.map((line) => el("li", {}, line))),
    instances.length ? table : el("p", { class: "muted" }, "No instance was running at the peak."),
    day.peak_instances_truncated
      ? el("p", { class: "muted" }, `Only the first ${instances.length} instances are shown; ` +
        `\`licensectl usage --day ${facts.day} --instances\` lists them all.`)
      : "");
}

// --- upload ---

function resetUpload() {
  view.checkedText = null;
  $("license-text").value = "";
  $("license-file").value = "";
  fill($("what-if"));
  $("what-if").hidden = true;
  $("activate").hidden = true;
  $("upload-result").hidden = true;
}

function showWhatIf(className, ...children) {
  const box = $("what-if");
  box.className = `what-if ${className}`;
  fill(box, ...children);
  box.hidden = false;
}

async function readFile() {
  const file = $("license-file").files[0];
  if (!file) return;
  if (file.size > MAX_LICENSE_BYTES) {
    $("activate").hidden = true;
    view.checkedText = null;
    showWhatIf("rejected", el("p", {}, `${file.name} is larger than 1 MiB: it is not a license.`));
    return;
  }
  $("license-text").value = (await file.text()).trim();
  await check();
}

function textChanged() {
  if (view.checkedText !== null && $("license-text").value.trim() !== view.checkedText) {
    view.checkedText = null;
    $("activate").hidden = true;
    showWhatIf("stale", el("p", {}, "The text changed since it was checked: check it again."));
  }
}

function headroomWords(verdict) {
  if (!verdict.last_evaluated_day) {
    return "No day has been evaluated yet, so there is no peak to compare with.";
  }
  const headroom = int(verdict.core_headroom);
  const peak = cores(int(verdict.last_evaluated_peak_cores));
  const against = `the peak of ${peak} on ${verdict.last_evaluated_day}`;
  return headroom >= 0
    ? `Core headroom: ${cores(headroom)} to spare against ${against}.`
    : `Core headroom: ${cores(-headroom)} short of ${against}.`;
}

function whatIf(verdict) {
  const license = verdict.license || {};
  if (!verdict.valid) {
    const reason = enumName(verdict.reason, "LICENSE_REJECTION_REASON_");
    return [
      "rejected",
      el("h3", {}, "Not valid: ", el("code", { class: "reason" }, reason)),
      el("p", {}, verdict.message || ""),
      license.deployment_id ? el("p", {}, `It was issued for deployment ${license.deployment_id}.`) : "",
      el("p", {}, "Nothing changes: the license in force stays in force."),
    ];
  }
  const state = stateName(verdict.resulting_state);
  const grace = verdict.resulting_grace_end_time
    ? `, with a grace period ending ${dateTime(verdict.resulting_grace_end_time)}` : "";
  const gained = verdict.features_gained || [];
  const lost = verdict.features_lost || [];
  const left = int(verdict.days_until_expiration);
  const items = [
    `License ${license.serial_number} for ${license.customer}: ${cores(int(license.max_dp_cores))}, ` +
      `features ${(license.features || []).join(", ") || "none"}${license.free_trial ? ", free trial" : ""}.`,
    `The state would be ${state}${grace}.`,
    headroomWords(verdict),
    `Features gained: ${gained.join(", ") || "none"}.`,
    `Features lost: ${lost.join(", ") || "none"}.`,
    `${days(left)} until it expires, on ${dateTime(license.end_time || license.expiration_time)}.`,
    verdict.pending
      ? `Pending: it would wait and take over by itself on ${dateTime(license.effective_time)}; the license in force stays until then.`
      : "Not pending: it would take effect at once.",
  ];
  if (verdict.already_active) items.push("It is already the active license: activating it again changes nothing.");
  return [
    "valid",
    el("h3", {}, "Valid"),
    el("ul", { class: "facts" }, ...items.map((item) => el("li", {}, item))),
  ];
}

async function check() {
  const text = $("license-text").value.trim();
  view.checkedText = null;
  $("activate").hidden = true;
  $("upload-result").hidden = true;
  if (!text) {
    showWhatIf("rejected", el("p", {}, "Choose a license file or paste the license text first."));
    return;
  }
  const button = $("check-license");
  button.disabled = true;
  showWhatIf("checking", el("p", {}, "Checking the license…"));
  try {
    const verdict = await validateLicense(text);
    const [className, ...children] = whatIf(verdict);
    showWhatIf(className, ...children);
    if (verdict.valid && !verdict.already_active && view.role === "admin") {
      view.checkedText = text;
      $("activate").hidden = false;
    }
  } catch (error) {
    showWhatIf("rejected",
      el("h3", {}, "Could not check the license"),
      el("p", {}, error instanceof ApiError ? error.describe() : String(error)));
  } finally {
    button.disabled = false;
  }
}

async function activate() {
  const text = view.checkedText;
  if (text === null) return;
  const button = $("activate");
  const result = $("upload-result");
  button.disabled = true;
  try {
    const answer = await uploadLicense(text);
    const serial = answer.license?.serial_number || "";
    const state = stateName(answer.state);
    let message;
    if (answer.unchanged) message = `License ${serial} was already active: nothing changed.`;
    else if (answer.pending) message = `License ${serial} accepted: it takes over by itself on ${dateTime(answer.license?.effective_time)}.`;
    else message = `License ${serial} activated. The state is ${state}.`;
    resetUpload();
    result.className = "success";
    result.textContent = message;
    result.hidden = false;
    await refresh();
  } catch (error) {
    result.className = "error";
    result.textContent = `Not activated (${error instanceof ApiError ? error.describe() : error}).`;
    result.hidden = false;
    if (error instanceof ApiError && error.httpStatus === 400) {
      // refused for what it is (expired meanwhile, say): no use offering it again
      view.checkedText = null;
      button.hidden = true;
    }
  } finally {
    button.disabled = false;
  }
}

// --- the deployment ID's copy button ---

async function copyDeploymentId() {
  const input = $("deployment-id");
  const result = $("copy-result");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    // no clipboard API here (or no permission): copy the selected text the old way
    input.select();
    if (!document.execCommand("copy")) {
      result.textContent = "Select the ID and copy it.";
      return;
    }
  }
  result.textContent = "Copied.";
  setTimeout(() => { result.textContent = ""; }, 3000);
}

// --- wiring ---

$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut(""));
$("license-file").addEventListener("change", readFile);
$("license-text").addEventListener("input", textChanged);
$("check-license").addEventListener("click", check);
$("activate").addEventListener("click", activate);
$("copy-deployment-id").addEventListener("click", copyDeploymentId);

const saved = token.get();
if (saved) {
  detectRole(saved).then(start, (error) => {
    // a token refused is forgotten; an unreachable server leaves it for the next try
    if (error instanceof ApiError && [401, 403].includes(error.httpStatus)) token.clear();
    showSignIn(signInError(error));
  });
} else {
  showSignIn("");
}
