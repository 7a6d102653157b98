// The caller's own API tokens: create (with an expiry), list with last use, revoke.
// Servers without token management (no /api/v1/tokens) say so instead of failing.

import { ApiError, del, get, post } from "../api.js";
import { clear, errorBox, field, h, table, when } from "../dom.js";

export function render(main) {
  const box = h("div", { id: "tokens" }, h("p", { class: "muted" }, "Loading…"));
  const messages = h("div", { id: "token-messages" });
  const name = h("input", { id: "token-name", placeholder: "laptop", required: true });
  const expires = h("select", { id: "token-expires" }, ["30d", "7d", "90d", "365d"].map((e) => h("option", { value: e }, e)));
  const form = h("form", { class: "card toolbar", id: "token-form" }, field("Name", name), field("Expires in", expires),
    h("button", { type: "submit" }, "Create token"));
  main.append(h("h1", {}, "API tokens"), messages, box, form);

  const unavailable = (e) => e instanceof ApiError && (e.status === 404 || e.status === 405);
  const notAvailable = () => h("div", { class: "notice", id: "tokens-unavailable" }, "Token management is not available on this server.");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    try {
      const created = await post("/tokens", { name: name.value.trim(), expires: expires.value });
      messages.append(h("div", { class: "notice" }, `Token ${created.name} (expires ${new Date(created.expires_at).toLocaleString()}), shown only now:`,
        h("div", { class: "secret", id: "new-secret" }, created.token)));
      form.reset();
      refresh();
    } catch (e) { messages.append(unavailable(e) ? notAvailable() : errorBox(e)); }
  });

  async function revoke(token) {
    if (!confirm(`Revoke token ${token.name}? Whatever uses it stops working at once.`)) return;
    clear(messages);
    try { await del(`/tokens/${token.id}`); } catch (e) { messages.append(errorBox(e)); }
    refresh();
  }

  async function refresh() {
    try {
      const tokens = await get("/tokens");
      clear(box, table([
        { title: "Name", cell: (t) => t.name }, { title: "User", cell: (t) => t.user },
        { title: "Created", cell: (t) => when(t.created_at) }, { title: "Expires", cell: (t) => when(t.expires_at) },
        { title: "Last used", cell: (t) => when(t.last_used_at) },
        { title: "State", cell: (t) => (t.revoked_at ? "revoked" : t.expires_at && new Date(t.expires_at) < new Date() ? "expired" : "active") },
        { title: "", cell: (t) => (t.revoked_at ? "" : h("button", { class: "danger", onclick: () => revoke(t) }, "Revoke")) },
      ], tokens, { empty: "No token." }));
    } catch (e) {
      clear(box, unavailable(e) ? notAvailable() : errorBox(e));
      if (unavailable(e)) form.hidden = true;
    }
  }
  refresh();
}
