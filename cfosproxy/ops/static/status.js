// The status page: one tile per device, from /api/devices every 2 seconds.
"use strict";

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
  row(list, "transaction", text(device.transaction_id));
  row(list, "id tag", text(device.id_tag));
  if (device.gateway) {
    row(list, "backend", device.gateway.link, device.gateway.link !== "connected");
    row(list, "queue", text(device.gateway.queue_length), device.gateway.queue_length > 0);
    if (device.gateway.last_error) row(list, "backend error", device.gateway.last_error, true);
  }
  if (device.profile_error) row(list, "profile", device.profile_error, true);
  row(list, "enabled", device.enabled ? "yes" : "no", !device.enabled);
  section.append(title, list);
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
    const response = await fetch("/api/devices", { cache: "no-store" });
    const { devices } = await response.json();
    tiles.replaceChildren(...devices.map(tile));
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
