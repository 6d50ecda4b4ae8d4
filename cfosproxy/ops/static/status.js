// The status page: the site and its circuits per phase, the site limit and
// the meters (from /api/site), and one tile per device (from /api/devices),
// every 2 seconds.
"use strict";

// The unbalanced load gets a hint from this share of max_imbalance on.
const NEAR_IMBALANCE = 0.8;

const siteView = document.getElementById("site");
const tiles = document.getElementById("tiles");
const summary = document.getElementById("summary");
const errorLine = document.getElementById("error");
const tokenField = document.getElementById("token");
tokenField.value = sessionStorage.getItem("cfosproxy-token") || "";
tokenField.addEventListener("change", () => sessionStorage.setItem("cfosproxy-token", tokenField.value));

function text(value, unit) {
  if (value === null || value === undefined) return "–";
  return unit ? `${value} ${unit}` : String(value);
}

function amps(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(1)} A`;
}

function phaseCurrents(currents) {
  // The wallbox's phases L1, L2, L3 as it reported them; "–" for a phase
  // it said nothing of.
  if (!currents || currents.every((value) => value === null)) return "–";
  return currents
    .map((value, i) => `L${i + 1} ${value === null ? "–" : Number(value).toFixed(1)}`)
    .join(" · ") + " A";
}

function kwh(wh) {
  return wh === null || wh === undefined ? "–" : `${(wh / 1000).toFixed(2)} kWh`;
}

function figure(value) {
  return Number(value || 0).toFixed(1);
}

function bar(kind, value, scale) {
  const span = document.createElement("span");
  span.className = kind;
  span.style.width = `${scale > 0 ? Math.min(100, (100 * (value || 0)) / scale) : 0}%`;
  return span;
}

function signed(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(1);
}

function phaseRow(node, index, phase, scale, reading) {
  // One phase of a circuit: the limit, what is available and what the
  // devices below are counted for, as bars on the circuit's scale; with a
  // meter, first what it reads and the other load on the phase.
  const limit = node.max_current[index];
  const available = node.available[index];
  const counted = node.counted[index];
  const row = document.createElement("div");
  row.className = "phase";
  row.dataset.phase = phase;
  const label = document.createElement("span");
  label.textContent = phase;
  const track = document.createElement("span");
  track.className = "track";
  const countedBar = bar("counted", counted, scale);
  if (counted > available) countedBar.classList.add("over");
  track.append(bar("limit", limit, scale), bar("available", available, scale), countedBar);
  track.title = `${phase}: counted ${figure(counted)} A, available ${figure(available)} A, limit ${figure(limit)} A`;
  const figures = document.createElement("span");
  figures.className = "figures";
  const metered = node.meter
    ? `meter ${signed(reading && !reading.silent && reading.currents ? reading.currents[index] : null)} · ` +
      `other ${signed(node.other ? node.other[index] : null)} · `
    : "";
  figures.textContent = `${metered}counted ${figure(counted)} · available ${figure(available)} · limit ${figure(limit)} A`;
  if (counted > available) figures.classList.add("problem");
  row.append(label, track, figures);
  return row;
}

function imbalanceHint(state) {
  // Only with a limit on unbalanced load, and only once it comes near.
  const limit = state.max_imbalance;
  if (!(limit > 0) || state.imbalance < NEAR_IMBALANCE * limit) return null;
  const hint = document.createElement("p");
  const where = state.imbalance > limit ? "above" : state.imbalance === limit ? "at" : "near";
  hint.className = `hint imbalance ${where === "near" ? "near" : "problem"}`;
  hint.textContent = `unbalanced load ${figure(state.imbalance)} A: ${where} the limit of ${figure(limit)} A`;
  return hint;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "no reading yet";
  return seconds < 120 ? `${Number(seconds).toFixed(1)} s ago` : `${Math.round(seconds / 60)} min ago`;
}

function meterLine(node, reading, state) {
  // The meter of a circuit or the site, and a badge while it is silent:
  // then the devices below share the fail-safe current.
  const lines = [];
  const line = document.createElement("p");
  line.className = "meter";
  line.textContent = `meter ${node.meter}` + (reading ? ` · ${reading.type} · ${age(reading.age)}` : "");
  lines.push(line);
  if (node.silent) {
    const badge = document.createElement("p");
    badge.className = "hint problem silent";
    badge.textContent = `meter silent: fail-safe ${figure(state.failsafe_current)} A`;
    if (reading && reading.problem) badge.title = reading.problem;
    lines.push(badge);
  }
  return lines;
}

function siteLimitLine(limit) {
  // The site's limit in force, and where it comes from.
  const line = document.createElement("p");
  line.className = `site-limit ${limit.source}`;
  line.textContent = limit.source === "api"
    ? `site limit ${figure(limit.max_current)} A per phase · set over the API ${limit.set_at.replace("T", " ").replace("Z", " UTC")} · config ${figure(limit.configured)} A`
    : `site limit ${figure(limit.max_current)} A per phase · from the config`;
  return line;
}

function circuitBlock(node, state, children) {
  const section = document.createElement("section");
  section.className = "circuit";
  section.dataset.circuit = node.name;
  const title = document.createElement("h3");
  title.textContent = node.name;
  const below = document.createElement("small");
  below.textContent = node.devices.length ? `devices: ${node.devices.join(", ")}` : "no devices";
  title.append(below);
  section.append(title);
  if (node.parent === null) {
    if (state.site_limit) section.append(siteLimitLine(state.site_limit));
    const hint = imbalanceHint(state);
    if (hint) section.append(hint);
  }
  const reading = node.meter ? (state.meters || []).find((meter) => meter.name === node.meter) : null;
  if (node.meter) section.append(...meterLine(node, reading, state));
  const scale = Math.max(...node.max_current, ...node.available, ...node.counted);
  const phases = document.createElement("div");
  phases.className = "phases";
  state.phases.forEach((phase, index) => phases.append(phaseRow(node, index, phase, scale, reading)));
  const nested = document.createElement("div");
  nested.className = "children";
  for (const child of children.get(node.name) || []) {
    nested.append(circuitBlock(child, state, children));
  }
  section.append(phases, nested);
  return section;
}

function showSite(state) {
  if (!state || !state.site) {
    siteView.hidden = true;
    return;
  }
  // Circuits by the name of their parent, the site at the root.
  const children = new Map();
  for (const circuit of state.circuits) {
    const parent = circuit.parent || "site";
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(circuit);
  }
  const blocks = [circuitBlock(state.site, state, children)];
  if (state.meters && state.meters.length) blocks.push(meterList(state));
  siteView.replaceChildren(...blocks);
  siteView.hidden = false;
}

function meterList(state) {
  // Every meter: its last reading per phase, how old it is, and whether
  // it is silent.
  const section = document.createElement("section");
  section.className = "meters";
  const title = document.createElement("h3");
  title.textContent = "meters";
  const settings = document.createElement("small");
  settings.textContent = `reserve ${figure(state.reserve)} A · fail-safe ${figure(state.failsafe_current)} A`;
  title.append(settings);
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const label of ["meter", "type", ...state.phases, "read", "state"]) {
    const cell = document.createElement("th");
    cell.textContent = label;
    head.append(cell);
  }
  const body = table.createTBody();
  for (const meter of state.meters) {
    const row = body.insertRow();
    row.dataset.meter = meter.name;
    if (meter.silent) row.className = "silent";
    const cells = [meter.name, meter.type];
    state.phases.forEach((_, i) => cells.push(meter.currents ? `${signed(meter.currents[i])} A` : "–"));
    cells.push(age(meter.age), meter.silent ? "silent" : "ok");
    for (const value of cells) row.insertCell().textContent = value;
    if (meter.problem) row.title = meter.problem;
  }
  section.append(title, table);
  return section;
}

function wiredLine(device) {
  // Where the device hangs and the site phases it is counted on; devices
  // that are not configured have none.
  if (!device.wiring) return null;
  const line = document.createElement("p");
  line.className = "wired";
  const phases = device.phases && device.phases.length ? device.phases.join(" ") : "–";
  const parts = [`circuit ${device.circuit || "site"}`, `wiring ${device.wiring}`, `counted on ${phases}`];
  if (device.priority) parts.push(`priority ${device.priority}`);
  line.textContent = parts.join(" · ");
  return line;
}

// How the status page names where a strategy's way comes from.
const LIMIT_SOURCES = { configuration: "configured", wallbox: "from the wallbox", defaults: "defaults" };

function volts(value) {
  return `${Number(value)} V`;
}

function since(at) {
  // How long ago a POSIX time was, coarse enough to read at a glance; a
  // clock of this browser a little ahead of cfosproxy's reads "0 s ago".
  const seconds = Math.max(0, Date.now() / 1000 - at);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function wallboxFacts(facts) {
  // What the wallbox said of itself (GetConfiguration), for a tooltip.
  if (!facts) return "the wallbox said nothing of how it takes limits";
  return [
    `max stack level ${text(facts.max_stack_level)}`,
    `units ${facts.rate_units ? facts.rate_units.join(" ") : "–"}`,
    `max periods ${text(facts.max_periods)}`,
    `max profiles ${text(facts.max_profiles)}`,
  ].join(", ");
}

function limitLines(limits) {
  // How limits are sent to an OCPP wallbox: the way in one line, a badge
  // while it is probed or when it refuses every way, and its last refusal.
  // The refusal's reason may quote the wallbox: only ever textContent.
  if (!limits) return [];
  const lines = [];
  const way = document.createElement("p");
  way.className = "limits";
  const unit = limits.rate_unit === "W" && limits.voltage !== null ? `W at ${volts(limits.voltage)}` : limits.rate_unit;
  const parts = [limits.purpose, `stack ${limits.stack_level}`, unit];
  if (limits.default_limit === false) parts.push("no default limit");
  way.textContent = `limits: ${parts.join(" · ")} (${LIMIT_SOURCES[limits.source] || limits.source})`;
  way.title = wallboxFacts(limits.wallbox);
  lines.push(way);
  if (limits.state === "refused" || limits.state === "probing") {
    const badge = document.createElement("p");
    badge.className = `badge ${limits.state}`;
    badge.textContent = limits.state === "refused"
      ? "refuses every limit: counted at max current"
      : "probing: asking the wallbox how it takes limits";
    lines.push(badge);
  }
  const refusal = limits.last_refusal;
  if (refusal) {
    const line = document.createElement("p");
    line.className = "refusal";
    line.textContent = `last refused ${since(refusal.at)}: ${refusal.way} — ${refusal.reason}`;
    line.title = new Date(refusal.at * 1000).toLocaleString();
    lines.push(line);
  }
  return lines;
}

function row(list, label, value, problem) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (problem) dd.className = "problem";
  list.append(dt, dd);
}

function tile(device) {
  const section = document.createElement("section");
  const kind = !device.connected ? "offline" : device.charging ? "charging" : "online";
  section.className = `tile ${kind}`;
  section.dataset.device = device.name;
  const title = document.createElement("h2");
  title.textContent = device.name;
  const type = document.createElement("small");
  type.textContent = device.type === "ocpp" ? "OCPP" : "Modbus";
  title.append(type);
  const list = document.createElement("dl");
  row(list, "connection", device.connected ? "connected" : "offline", !device.connected);
  row(list, "state", text(device.status));
  row(list, "granted", amps(device.granted_current));
  row(list, "accepted", amps(device.accepted_limit));
  row(list, "power", text(device.power_w, "W"));
  row(list, "currents", phaseCurrents(device.currents));
  row(list, "energy", kwh(device.energy_wh));
  if (device.session_energy_wh !== null && device.session_energy_wh !== undefined) {
    row(list, "session", kwh(device.session_energy_wh));
  }
  row(list, "transaction", text(device.transaction_id));
  row(list, "id tag", text(device.id_tag));
  if (device.gateway) {
    row(list, "backend", device.gateway.link, device.gateway.link !== "connected");
    row(list, "queue", text(device.gateway.queue_length), device.gateway.queue_length > 0);
    if (device.gateway.last_error) row(list, "backend error", device.gateway.last_error, true);
  }
  if (device.profile_error) row(list, "profile", device.profile_error, true);
  row(list, "enabled", device.enabled ? "yes" : "no", !device.enabled);
  section.append(title);
  const wired = wiredLine(device);
  if (wired) section.append(wired);
  section.append(...limitLines(device.limits));
  section.append(list);
  if (device.configured) {
    const button = document.createElement("button");
    button.textContent = device.enabled ? "disable" : "enable";
    button.addEventListener("click", () => toggle(device));
    section.append(button);
  }
  return section;
}

async function toggle(device) {
  const action = device.enabled ? "disable" : "enable";
  const response = await fetch(`/api/devices/${encodeURIComponent(device.name)}/${action}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${tokenField.value}` },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    showError(`${action} ${device.name}: ${response.status} ${body.detail || body.error || ""}`);
    return;
  }
  await refresh();
}

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = !message;
}

async function refresh() {
  try {
    const [response, siteResponse] = await Promise.all([
      fetch("/api/devices", { cache: "no-store" }),
      fetch("/api/site", { cache: "no-store" }),
    ]);
    const { devices } = await response.json();
    tiles.replaceChildren(...devices.map(tile));
    showSite(siteResponse.ok ? await siteResponse.json() : null);
    const charging = devices.filter((d) => d.charging).length;
    const granted = devices.reduce((sum, d) => sum + (d.granted_current || 0), 0);
    summary.textContent = `${devices.length} devices, ${charging} charging, ${granted.toFixed(1)} A granted`;
    showError("");
  } catch (error) {
    showError(`cannot reach cfosproxy: ${error}`);
  }
}

refresh();
setInterval(refresh, 2000);
