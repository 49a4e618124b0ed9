// autopar plan explorer: a page over the /v1 API only (no build step, no libraries).
"use strict";

const $ = (id) => document.getElementById(id);
let currentJob = null;

function headers(json) {
  const h = {};
  if (json) h["content-type"] = "application/json";
  const token = $("token").value || sessionStorage.getItem("autopar-token") || "";
  if (token) h["authorization"] = "Bearer " + token;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...headers(options.body !== undefined), ...(options.headers || {}) },
  });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const problem = await response.json();
      detail = problem.detail || problem.title || detail;
    } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function fill(select, names, preferred) {
  select.replaceChildren(...names.map((name) => new Option(name, name, false, name === preferred)));
}

async function loadCatalogues() {
  const models = await (await api("/v1/models")).json();
  fill($("model"), models.map((m) => m.name), "llama-3.1-8b");
  const clusters = await (await api("/v1/clusters")).json();
  fill($("cluster"), clusters.map((c) => c.id), "dgx-h100");
}

function planBody() {
  const body = {
    model: $("model").value,
    cluster: $("cluster").value,
    seq_len: Number($("seq_len").value),
    global_batch: Number($("global_batch").value),
    framework: $("framework").value,
    time_limit: Number($("time_limit").value),
  };
  if ($("gpus").value) body.gpus = Number($("gpus").value);
  else body.nodes = Number($("nodes").value);
  return body;
}

function showProgress(job) {
  const p = job.progress || {};
  const counts = p.layouts_total ? ` ${p.layouts_evaluated}/${p.layouts_total} layouts` : "";
  $("job-status").textContent = `job ${job.id}: ${job.status}${p.phase ? ", " + p.phase : ""}${counts}`;
  $("job-progress").value = job.status === "done" ? 1 : (p.fraction_evaluated || 0);
}

async function poll(id) {
  for (;;) {
    const job = await (await api(`/v1/plans/${id}`)).json();
    showProgress(job);
    if (job.status === "done") return job;
    if (job.status === "failed" || job.status === "cancelled") {
      throw new Error(job.error ? job.error.detail : `job ${job.status}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

function showResult(job) {
  currentJob = job.id;
  const rows = job.result.plans.map((plan, index) => {
    const c = plan.config;
    return `<tr><td>#${index + 1}</td><td>tp ${c.tp} pp ${c.pp} dp ${c.dp} cp ${c.cp}` +
      `${c.ep > 1 ? " ep " + c.ep : ""}${c.vpp ? " vpp " + c.vpp : ""} mbs ${c.mbs}` +
      ` recompute ${c.recompute}</td><td>${plan.time.step_time_s.toFixed(3)} s</td>` +
      `<td>${(plan.time.mfu * 100).toFixed(1)}%</td><td>${plan.memory.peak_gib.toFixed(2)} GiB</td></tr>`;
  });
  $("result-table").innerHTML =
    "<tr><th>#</th><th>layout</th><th>step</th><th>MFU</th><th>peak</th></tr>" + rows.join("");
  $("result").hidden = false;
}

async function openReport(id) {
  const html = await (await api(`/v1/plans/${id}/report`)).text();
  const frame = $("report-frame");
  frame.srcdoc = html;
  frame.hidden = false;
}

async function downloadLaunch(id, format) {
  const launch = await (await api(`/v1/plans/${id}/launch/${format}`)).json();
  for (const [name, text] of Object.entries(launch.files)) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    link.download = name;
    link.className = "launch-file";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }
}

async function loadStored() {
  const jobs = await (await api("/v1/plans")).json();
  const body = $("stored-table").querySelector("tbody");
  body.replaceChildren(...jobs.map((job) => {
    const row = document.createElement("tr");
    const r = job.request;
    const size = r.gpus ? `${r.gpus} GPUs` : `${r.nodes || 1} nodes`;
    for (const text of [job.created_at.replace("T", " ").slice(0, 19), r.model, `${r.cluster}, ${size}`,
      job.status, job.best_layout || "", job.best_step_time_s ? job.best_step_time_s.toFixed(3) : ""]) {
      const cell = document.createElement("td");
      cell.textContent = typeof text === "string" ? text : JSON.stringify(text);
      row.appendChild(cell);
    }
    const actions = document.createElement("td");
    if (job.status === "done") {
      const open = document.createElement("button");
      open.textContent = "report";
      open.addEventListener("click", () => openReport(job.id).catch(showError));
      actions.appendChild(open);
    }
    row.appendChild(actions);
    return row;
  }));
}

function showError(error) {
  $("error").textContent = String(error.message || error);
}

async function submitPlan(event) {
  event.preventDefault();
  $("error").textContent = "";
  $("result").hidden = true;
  $("job").hidden = false;
  try {
    const response = await api("/v1/plans", { method: "POST", body: JSON.stringify(planBody()) });
    const job = await response.json();
    showProgress(job);
    showResult(job.status === "done" ? job : await poll(job.id));
    await loadStored();
  } catch (error) {
    showError(error);
  }
}

async function importModel() {
  try {
    const config = JSON.parse($("import-config").value);
    const name = $("import-name").value;
    const query = name ? `?name=${encodeURIComponent(name)}` : "";
    const entry = await (await api(`/v1/models/import${query}`, {
      method: "POST", body: JSON.stringify(config),
    })).json();
    await loadCatalogues();
    $("model").value = entry.name;
    $("import-status").textContent = `imported ${entry.name}`;
  } catch (error) {
    $("import-status").textContent = String(error.message || error);
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("autopar-token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("autopar-token", $("token").value);
    loadCatalogues().then(loadStored).catch(showError);
  });
  $("plan-form").addEventListener("submit", submitPlan);
  $("import-button").addEventListener("click", importModel);
  $("open-report").addEventListener("click", () => openReport(currentJob).catch(showError));
  for (const button of document.querySelectorAll("button.download")) {
    button.addEventListener("click", () => downloadLaunch(currentJob, button.dataset.format).catch(showError));
  }
  $("refresh").addEventListener("click", () => loadStored().catch(showError));
  loadCatalogues().then(loadStored).catch(showError);
});
