/* modelcycle dashboard: draws the page's Plotly figures, refreshes the live parts in place, loads figures
   computed on demand, and makes serving actions on the admin API with the token the reader gives. */
"use strict";

const body = document.body;
const base = body.dataset.base;
const config = { responsive: true, displaylogo: false };
const TOKEN_KEY = "modelcycle-admin-token";

function figureOf(element, root) {
  const source = root.getElementById(element.dataset.figure);
  return source ? JSON.parse(source.textContent) : null;
}

function draw(element, figure) {
  for (const note of element.querySelectorAll(":scope > .pending")) note.remove();
  return Plotly.react(element, figure.data, figure.layout, config);
}

/* Draw each chart from the figure that `root` (this page, or a fresh copy of it) has for it; a chart whose
   figure is gone (no data in the window any more) is emptied and shows the fresh page's note instead. */
function drawAll(root) {
  for (const element of document.querySelectorAll(".chart[data-figure]")) {
    try {
      const figure = figureOf(element, root);
      if (figure) {
        draw(element, figure);
      } else if (element.data) {
        Plotly.purge(element);
        const fresh = root.getElementById(element.id);
        element.innerHTML = fresh ? fresh.innerHTML : "";
      }
    } catch (error) {
      console.warn(`chart ${element.id} not drawn: ${error.message}`);
    }
  }
}

/* Live refresh: fetch this URL again, swap each [data-live] part by id and redraw each chart with its new
   data (uirevision keeps the reader's zoom). One refresh at a time, the next `seconds` after the last one
   ended; skipped while the tab is hidden. */
async function refresh() {
  if (document.hidden) return;
  const status = document.getElementById("live-status");
  try {
    const answer = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const part of document.querySelectorAll("[data-live]")) {
      const replacement = fresh.getElementById(part.id);
      if (replacement) part.innerHTML = replacement.innerHTML;
    }
    drawAll(fresh);
    if (status) status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (status) status.textContent = `live · refresh failed (${error.message})`;
  }
}

function refreshEvery(seconds) {
  setTimeout(async () => {
    await refresh();
    refreshEvery(seconds);
  }, seconds * 1000);
}

async function answerOf(response) {
  try {
    return await response.json();
  } catch (error) {
    return { error: `HTTP ${response.status}, not JSON` };
  }
}

/* Figures computed on demand (a version's global importance): ask until ready. */
async function loadLazy(element, delay = 1000) {
  const answer = await fetch(element.dataset.source, { headers: { Accept: "application/json" } });
  const found = await answerOf(answer);
  if (answer.status === 202 || answer.status === 429) {
    setTimeout(() => loadLazy(element, Math.min(delay * 2, 10000)), delay);
  } else if (found.status === "ready") {
    element.innerHTML = "";
    draw(element, found.figure);
  } else {
    element.innerHTML = "";
    const note = document.createElement("p");
    note.className = "pending";
    note.textContent = `No global importance: ${found.reason || found.error}`;
    element.appendChild(note);
  }
}

/* Serving actions: POST to the admin API; the server checks the token and refuses without it. */
function setUpActions() {
  const panel = document.getElementById("actions");
  if (!panel || body.dataset.admin === undefined) return;
  const model = encodeURIComponent(panel.dataset.model);
  const root = `${body.dataset.admin}/admin/models/${model}`;  // the server's admin API
  const tokenInput = document.getElementById("admin-token");
  const result = document.getElementById("action-result");
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
  tokenInput.addEventListener("change", () => {
    sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
    showStatus();
  });
  const headers = () => {
    const given = { "Content-Type": "application/json" };
    if (tokenInput.value) given.Authorization = `Bearer ${tokenInput.value}`;
    return given;
  };
  async function showStatus() {
    const target = document.getElementById("serving-status");
    if (!tokenInput.value) { target.textContent = ""; return; }
    const answer = await fetch(root, { headers: headers() });
    const found = await answerOf(answer);
    target.textContent = answer.ok ? `serving: ${JSON.stringify(found, null, 1)}` : `status refused: ${found.error}`;
  }
  for (const button of panel.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", async () => {
      const version = Number(document.getElementById("action-version").value);
      const action = button.dataset.action;
      const bodies = {
        promote: { version },
        canary: { version, percent: Number(document.getElementById("canary-percent").value) },
        shadow: { version },
        unshadow: {},
        rollback: null,
      };
      const path = action === "unshadow" ? "shadow" : action;
      result.className = "";
      result.textContent = `${action}…`;
      try {
        const answer = await fetch(`${root}/${path}`, {
          method: "POST",
          headers: headers(),
          body: bodies[action] === null ? undefined : JSON.stringify(bodies[action]),
        });
        const found = await answerOf(answer);
        if (!answer.ok) {
          result.className = "refused";
          result.textContent = `refused (${answer.status}): ${found.error}`;
          return;
        }
        result.className = "done";
        result.textContent = `${action} done: primary v${found.primary ? found.primary.version : "?"}`;
        await refresh();
        showStatus();
      } catch (error) {
        result.className = "refused";
        result.textContent = `failed: ${error.message}`;
      }
    });
  }
  showStatus();
}

/* Runs: the compare button needs two runs or more. */
function setUpCompare() {
  const form = document.getElementById("compare-form");
  if (!form) return;
  const button = document.getElementById("compare-button");
  const update = () => {
    button.disabled = form.querySelectorAll("input[name=run]:checked").length < 2;
  };
  form.addEventListener("change", update);
  update();
}

window.addEventListener("DOMContentLoaded", () => {
  drawAll(document);
  for (const element of document.querySelectorAll(".chart.lazy[data-source]")) loadLazy(element);
  setUpActions();
  setUpCompare();
  const seconds = Number(body.dataset.refresh);
  if (seconds > 0) refreshEvery(seconds);
});
