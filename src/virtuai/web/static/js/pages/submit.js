// Submit a job: the same fields as `virtuai submit`; "Check" asks the scheduler what
// would happen (POST /jobs/plan) without submitting; a refusal shows the server's words.

import { get, post, submittableTenants } from "../api.js";
import { clear, errorBox, field, h } from "../dom.js";

export function render(main, _params, ctx) {
  const submittable = ctx.me.tenants.filter((t) => t.role !== "viewer").map((t) => t.tenant);
  const tenant = h("select", { name: "tenant", id: "tenant" }, submittable.map((t) => h("option", { value: t }, t)));
  const input = (name, attrs = {}) => h("input", { name, id: name, ...attrs });
  const form = h("form", { class: "card", id: "submit-form" },
    h("div", { class: "grid" },
      field("Tenant", tenant),
      field("Name", input("name", { placeholder: "optional" })),
      h("label", { class: "wide" }, "Command (run by sh -c)",
        h("textarea", { name: "command", id: "command", rows: 3, required: true, placeholder: "python train.py --epochs 3" })),
      field("CPUs per task", input("cpu", { value: "1" })),
      field("Memory per task", input("memory", { value: "1Gi" })),
      field("GPUs per task", input("gpu", { type: "number", min: 0, value: "0" })),
      field("Tasks (gang)", input("tasks", { type: "number", min: 1, value: "1" })),
      field("Time limit", input("time", { value: "1h" })),
      field("Priority", h("select", { name: "priority", id: "priority" }, ["normal", "low", "high"].map((p) => h("option", { value: p }, p)))),
      field("Array", input("array", { placeholder: "e.g. 0-9%2" })),
      field("Dependency", input("dependency", { placeholder: "afterok:12" })),
      field("Virtual cluster", h("select", { name: "vc", id: "vc" }, h("option", { value: "" }, "none"))),
      h("label", { class: "wide" }, "Environment (NAME=value, one a line)",
        h("textarea", { name: "env", id: "env", rows: 2 }))),
    h("div", { class: "toolbar" }, h("button", { type: "submit", id: "submit" }, "Submit"),
      h("button", { type: "button", class: "secondary", id: "plan", onclick: () => send(true) }, "Check without submitting")));
  const result = h("div", { id: "submit-result" });
  main.append(h("h1", {}, "Submit a job"), form, result);
  submittableTenants(ctx.me).then((list) => {
    for (const t of list) if (!submittable.includes(t)) tenant.append(h("option", { value: t }, t));
    if (!list.length) result.append(h("div", { class: "notice" }, "You cannot submit: you are not a member of any tenant."));
  });

  get("/vcs").then((list) => {
    const vc = form.querySelector("#vc");
    for (const c of list.filter((c) => c.state === "running")) vc.append(h("option", { value: `${c.tenant}/${c.name}` }, `${c.name} (${c.tenant})`));
  }).catch(() => {});

  form.addEventListener("submit", (event) => { event.preventDefault(); send(false); });

  function body() {
    const v = (name) => form.querySelector(`#${name}`).value.trim();
    const env = {};
    for (const line of v("env").split("\n")) {
      if (!line.trim()) continue;
      const at = line.indexOf("=");
      if (at < 1) throw new Error(`environment: ${JSON.stringify(line)} is not NAME=value`);
      env[line.slice(0, at).trim()] = line.slice(at + 1);
    }
    const vc = v("vc");
    const spec = {
      tenant: vc ? vc.split("/")[0] : v("tenant") || undefined,
      name: v("name") || undefined,
      command: ["sh", "-c", v("command")],
      time: v("time"), priority: v("priority"), env,
      array: v("array") || undefined, dependency: v("dependency") || undefined,
    };
    if (vc) spec.vc = vc.split("/")[1];
    else {
      spec.resources = { cpu: v("cpu"), memory: v("memory"), gpu: Number(v("gpu") || 0) };
      spec.tasks = Number(v("tasks") || 1);
    }
    return spec;
  }

  async function send(planOnly) {
    clear(result);
    let spec;
    try { spec = body(); } catch (e) { result.append(errorBox(e)); return; }
    try {
      if (planOnly) {
        const plan = await post("/jobs/plan", spec);
        result.append(h("div", { class: plan.can_ever_run ? "notice" : "error", id: "plan-result" },
          !plan.can_ever_run ? `It can never run: ${plan.reason}`
            : plan.starts_now ? `It would start now${plan.preempts ? `, preempting ${plan.preempts} job(s)` : ""}.`
              : `It would wait (${plan.kind}): ${plan.reason}${plan.queue_position ? `; #${plan.queue_position} in queue` : ""}.`));
        return;
      }
      const jobs = await post("/jobs", spec);
      location.hash = `#/jobs/${jobs.id}`;
    } catch (e) {
      result.append(errorBox(e));
    }
  }
}
