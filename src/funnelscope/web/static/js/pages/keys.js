// Keys: list, create and revoke API keys while the server runs (the HTTP API of api/keys.py).
// Managing keys needs an admin key; with a plain read key the page says how to get one instead
// of calling routes that would answer 403. A new key's secret is shown once, here, after
// creation: the server keeps only a hash of read keys.

import { api } from "../api.js";
import { dateTime, h, stateBox, table } from "../format.js";

export const title = "Keys";
export const controls = false; // keys have no period

const KINDS = [
  ["write", "Write key (public, one per source: SDKs, imports)"],
  ["read", "Read key (secret: dashboard, query API)"],
  ["admin", "Admin key (secret: read, and manage keys)"],
];

/** The message of an API error, with every problem of a 4xx answer. */
function problemText(err) {
  if (Array.isArray(err.detail)) return err.detail.map((d) => d.msg).join("; ");
  return err.message;
}

function kindBadge(key) {
  const [cls, text] = key.kind === "write" ? ["good", "write"]
    : key.is_admin ? ["bad", "admin"] : ["warn", "read"];
  return h("span", { class: `badge ${cls}`, "data-value": text }, text);
}

function keyCell(key) {
  return key.kind === "write" && key.write_key
    ? h("code", { class: "key" }, key.write_key)
    : h("code", { class: "key", title: "Only the prefix is kept: the secret was shown once" },
      `${key.prefix}…`);
}

function revokeButton(key, onRevoke) {
  if (!key.is_active) return h("span", { class: "muted small" }, `revoked ${dateTime(key.revoked_at)}`);
  // Two clicks rather than a confirm() dialog: no modal, and a stray click does nothing.
  const button = h("button", { type: "button", class: "secondary",
    testid: `key-revoke-${key.key_id}` }, "Revoke");
  let armed = null;
  button.addEventListener("click", () => {
    if (!armed) {
      button.textContent = "Click again to revoke";
      armed = setTimeout(() => { armed = null; button.textContent = "Revoke"; }, 5000);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    onRevoke(key);
  });
  return button;
}

function keysTable(keys, onRevoke) {
  if (!keys.length) {
    return stateBox("empty", "No keys yet", "Create a write key for each source below.");
  }
  return table([
    { key: "kind", label: "Kind", format: (v, k) => kindBadge(k),
      testid: (k) => `key-kind-${k.key_id}` },
    { key: "source", label: "Source / label", testid: (k) => `key-source-${k.key_id}` },
    { key: "prefix", label: "Key", format: (v, k) => keyCell(k) },
    { key: "created_at", label: "Created", format: dateTime },
    { key: "is_active", label: "Status", format: (v, k) => revokeButton(k, onRevoke),
      testid: (k) => `key-status-${k.key_id}` },
  ], keys, { testid: "keys-table", rowTestid: (k) => `key-row-${k.key_id}` });
}

function createdBox(created) {
  const secret = created.kind === "read";
  const token = h("code", { class: "key", testid: "key-created-token" }, created.token);
  const copy = h("button", { type: "button", class: "secondary", testid: "key-copy" }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(created.token);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Select and copy it by hand";
    }
  });
  return h("div", { class: "state created", testid: "key-created", role: "status",
    "data-value": created.key_id },
  h("h2", {}, `New ${created.is_admin ? "admin" : created.kind} key for ${created.source}`),
  h("p", { class: "key-line" }, token, " ", copy),
  h("p", { class: secret ? "warn-text" : "muted" }, secret
    ? "Store it now: the server keeps only its hash and cannot show it again."
    : "Set it as the write key of this source's SDK (it is public: it ships in pages and apps)."));
}

function createForm(onCreate) {
  const kind = h("select", { name: "kind", testid: "key-kind" },
    KINDS.map(([value, text]) => h("option", { value }, text)));
  const source = h("input", { name: "source", required: true, maxlength: "64",
    pattern: "[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,63}", placeholder: "web-shop",
    testid: "key-source", spellcheck: "false", autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert", testid: "key-error" });
  const submit = h("button", { type: "submit", testid: "key-create" }, "Create key");
  const form = h("form", { class: "builder key-form", testid: "key-form" },
    h("div", { class: "options" },
      h("label", {}, "Kind", kind),
      h("label", {}, "Source (write) or label (read)", source),
      submit),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      await onCreate({ kind: kind.value === "admin" ? "read" : kind.value,
        is_admin: kind.value === "admin", source: source.value.trim() });
      source.value = "";
    } catch (err) {
      if (err.name === "AbortError" || err.isAuth) throw err;
      error.textContent = problemText(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export async function render(root, ctx) {
  const me = await api("/api/v1/keys/me", { signal: ctx.signal });
  const head = h("div", { class: "page-head" }, h("h1", {}, "Keys"),
    h("span", { class: "muted", testid: "key-me" },
      `signed in with ${me.is_admin ? "admin" : me.kind} key ${me.prefix}… (${me.source})`));
  if (!me.can_manage_keys) {
    root.replaceChildren(head, stateBox("empty", "Managing keys needs an admin key",
      "This read key can see the data but not create or revoke keys, so that a leaked read key "
      + "cannot make itself a replacement. Sign in with an admin key (fsa_…). Create the first "
      + "one with the server stopped: funnelscope keys create --kind read --admin --source ops."));
    return;
  }
  const listBox = h("section", { class: "panel", testid: "section-keys" });
  const createdSlot = h("div", { testid: "key-created-slot" });
  const refresh = async () => {
    const data = await api("/api/v1/keys", { signal: ctx.signal });
    if (!ctx.isCurrent()) return;
    listBox.replaceChildren(h("h2", {}, "All keys"), keysTable(data.keys, async (key) => {
      try {
        await api(`/api/v1/keys/${encodeURIComponent(key.key_id)}`,
          { method: "DELETE", signal: ctx.signal });
      } catch (err) {
        if (err.name === "AbortError" || err.isAuth) throw err;
        createdSlot.replaceChildren(stateBox("error", `Could not revoke ${key.key_id}`,
          problemText(err)));
      }
      await refresh();
    }));
  };
  const onCreate = async (body) => {
    const created = await api("/api/v1/keys", { body, signal: ctx.signal });
    createdSlot.replaceChildren(createdBox(created));
    await refresh();
  };
  root.replaceChildren(head,
    h("section", { class: "panel", testid: "section-create-key" },
      h("h2", {}, "Create a key"),
      h("p", { class: "muted" }, "Keys work as soon as they are created; a revoked key is "
        + "refused from the next request on. The collector keeps running."),
      createForm(onCreate), createdSlot),
    listBox);
  await refresh();
}
