// One job: what it is, why it waits or how it ended, its events and task runs, live logs
// per task (stdout and stderr, read by offset as they grow), and cancel.

import { get, post } from "../api.js";
import { clear, errorBox, fields, FINISHED, h, resources, since, stateBadge, table, when } from "../dom.js";
import { followLog } from "../logs.js";

const POLL_MS = 1500;

export function render(main, [id]) {
  let stopped = false;
  let timer = null;
  let stopLog = () => {};
  let job = null;
  let logKey = null;  // "task:stream" shown now

  const title = h("h1", {}, `Job ${id}`);
  const summary = h("div", { class: "card", id: "job-summary" }, h("p", { class: "muted" }, "Loading…"));
  const actions = h("div", { class: "toolbar" });
  const tabs = h("div", { class: "tabs", id: "log-tabs" });
  const log = h("pre", { class: "log", id: "log" });
  const logStatus = h("p", { class: "muted small", id: "log-status" });
  const events = h("div", { id: "events" });
  const runs = h("div", { id: "task-runs" });
  main.append(title, actions, summary, h("h2", {}, "Logs"), tabs, log, logStatus,
    h("div", { class: "row" }, h("div", {}, h("h2", {}, "Events"), events), h("div", {}, h("h2", {}, "Task runs"), runs)));

  async function refresh() {
    clearTimeout(timer);
    try {
      job = await get(`/jobs/${id}`);
    } catch (e) {
      if (!stopped) clear(summary, errorBox(e));
      return;
    }
    if (stopped) return;
    title.textContent = `Job ${job.id}${job.name ? ` · ${job.name}` : ""}`;
    clear(summary, fields([
      ["State", h("span", { id: "job-state" }, stateBadge(job.state))],
      ["Why", h("span", { id: "job-reason" }, job.queue_position ? `#${job.queue_position} in queue. ` : "", job.reason || "—")],
      job.expected_start && ["Expected start", when(job.expected_start)],
      ["Tenant / user", `${job.tenant} / ${job.user}`],
      ["Command", h("code", {}, job.command.join(" "))],
      ["Per task", `${job.tasks} task(s) × ${resources(job.resources)}`],
      ["Time limit", `${Math.round(job.time_limit / 60)} min`],
      ["Priority", job.priority], ["Exit code", job.exit_code ?? "—"],
      job.vc && ["Virtual cluster", job.vc],
      job.array_id !== null && ["Array", `${job.array_id}[${job.array_index}]`],
      job.dependency && ["Depends on", job.dependency],
      ["Placement", job.placement.map((p) => `${p.index}: ${p.node}${p.gpu_indices.length ? ` GPU ${p.gpu_indices.join(",")}` : ""}`).join("; ") || "—"],
      ["Submitted", when(job.submitted_at)], ["Started", when(job.started_at)], ["Finished", when(job.finished_at)],
      ["Ran for", job.started_at ? since(job.started_at, job.finished_at) : "—"],
      job.restart_count && ["Restarts", job.restart_count],
    ]));
    clear(actions, FINISHED.has(job.state) ? null : h("button", { class: "danger", id: "cancel", onclick: cancel }, "Cancel"),
      h("a", { href: "#/jobs" }, h("button", { class: "secondary" }, "All jobs")));
    clear(events, table([
      { title: "When", cell: (e) => when(e.at) },
      { title: "Change", cell: (e) => [e.from_state ? `${e.from_state} → ` : "", stateBadge(e.to_state)] },
      { title: "Why", cell: (e) => h("span", { class: "reason" }, e.reason) },
      { title: "By", cell: (e) => e.actor },
    ], job.events));
    clear(runs, table([
      { title: "Attempt.task", cell: (t) => `${t.attempt}.${t.index}` },
      { title: "Node", cell: (t) => t.node },
      { title: "Outcome", cell: (t) => t.outcome || "running" },
      { title: "Exit", cell: (t) => t.exit_code ?? "—", num: true },
      { title: "Message", cell: (t) => h("span", { class: "reason" }, t.message) },
      { title: "Ran", cell: (t) => (t.started_at ? since(t.started_at, t.finished_at) : "—"), num: true },
    ], job.task_runs, { empty: "No task has started yet." }));
    renderTabs();
    if (!FINISHED.has(job.state)) timer = setTimeout(refresh, POLL_MS);
  }

  function renderTabs() {
    const keys = [];
    for (let i = 0; i < job.tasks; i += 1) keys.push(`${i}:stdout`, `${i}:stderr`);
    if (logKey === null) { logKey = keys[0]; readLog(); }
    clear(tabs, keys.map((k) => {
      const [task, stream] = k.split(":");
      return h("button", { class: k === logKey ? "active" : "", dataset: { log: k },
        onclick: () => { logKey = k; renderTabs(); readLog(); } },
      job.tasks > 1 ? `task ${task} ${stream}` : stream);
    }));
  }

  function readLog() {
    stopLog();
    const [task, stream] = logKey.split(":");
    stopLog = followLog(log, logStatus, id, task, stream);
  }

  async function cancel(event) {
    event.target.disabled = true;
    try { await post(`/jobs/${id}/cancel`); } catch (e) { actions.append(errorBox(e)); }
    refresh();
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); stopLog(); };
}
