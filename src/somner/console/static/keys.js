// Keys and users: the admin API's /admin/keys and /admin/users (the same checks as the CLI: the server refuses a
// key with more rights than the caller's, bad limits, unknown users). A new or rotated secret is shown once.
// "Edit limits" sends PATCH /admin/keys/{id} with every limit of the form: an empty field lifts that limit.
"use strict";

(() => {
  const { json, attempt, el, fill } = Somner;
  const $ = (id) => document.getElementById(id);

  function optionalInt(id) {
    const text = $(id).value.trim();
    return text === "" ? undefined : Number(text);
  }

  // A limit field of the edit form: empty is null (no limit), which PATCH takes as "lift it".
  function limitOrNull(id) {
    const value = optionalInt(id);
    return value === undefined ? null : value;
  }

  const text = (value) => (value === null || value === undefined ? "" : String(value));

  function startEdit(k) {
    $("edit-card").dataset.keyId = k.id;
    $("edit-id").textContent = k.id;
    $("edit-models").value = k.models ? k.models.join(", ") : "";
    $("edit-rpm").value = text(k.rpm);
    $("edit-tpm").value = text(k.tpm);
    $("edit-daily").value = text(k.daily_tokens);
    $("edit-concurrent").value = text(k.max_concurrent);
    $("edit-expires").value = "";
    $("edit-no-expiry").checked = false;
    $("edit-card").hidden = false;
    $("edit-card").scrollIntoView({ block: "nearest" });
    $("edit-rpm").focus();
  }

  async function saveEdit(event) {
    event.preventDefault();
    const models = $("edit-models").value.split(",").map((s) => s.trim()).filter(Boolean);
    const body = {
      models: models.length ? models : null,
      rpm: limitOrNull("edit-rpm"),
      tpm: limitOrNull("edit-tpm"),
      daily_tokens: limitOrNull("edit-daily"),
      max_concurrent: limitOrNull("edit-concurrent"),
    };
    const expires = $("edit-expires").value.trim();
    if ($("edit-no-expiry").checked) body.expires = null;
    else if (expires) body.expires = expires;
    const id = $("edit-card").dataset.keyId;
    await attempt(async () => {
      await json(`/admin/keys/${encodeURIComponent(id)}`, { method: "PATCH", json: body });
      $("edit-card").hidden = true;
      await refresh();
    });
  }

  function showSecret(record) {
    $("secret-value").textContent = record.key;
    $("secret").hidden = false;
    $("secret").dataset.keyId = record.id;
  }

  function limits(k) {
    const parts = [];
    if (k.rpm) parts.push(`${k.rpm} rpm`);
    if (k.tpm) parts.push(`${k.tpm} tpm`);
    if (k.daily_tokens) parts.push(`${k.daily_tokens} tokens/day`);
    if (k.max_concurrent) parts.push(`${k.max_concurrent} at once`);
    if (k.models) parts.push(`models: ${k.models.join(", ")}`);
    return parts.join(", ") || "none";
  }

  function keyRow(k) {
    const revoked = Boolean(k.revoked_at);
    const rotate = () => attempt(async () => {
      showSecret(await json(`/admin/keys/${k.id}/rotate`, { method: "POST" }));
      await refresh();
    });
    const revoke = () => attempt(async () => {
      await json(`/admin/keys/${k.id}/revoke`, { method: "POST" });
      await refresh();
    });
    const edit = () => startEdit(k);
    return el(
      "tr",
      { "data-key": k.id, "data-state": revoked ? "revoked" : "active" },
      el("td", { class: "mono" }, k.id),
      el("td", {}, k.user),
      el("td", {}, k.name || ""),
      el("td", { class: "mono" }, `${k.prefix}…`),
      el("td", {}, k.scopes.join(", ")),
      el("td", {}, limits(k)),
      el("td", {}, k.expires_at ? new Date(k.expires_at).toLocaleString() : "never"),
      el("td", { class: "state" }, revoked ? "revoked" : "active"),
      el(
        "td",
        { class: "actions" },
        revoked ? null : el("button", { type: "button", class: "edit quiet", onclick: edit }, "Edit limits"),
        revoked ? null : el("button", { type: "button", class: "rotate quiet", onclick: rotate }, "Rotate"),
        revoked ? null : el("button", { type: "button", class: "revoke quiet", onclick: revoke }, "Revoke"),
      ),
    );
  }

  function userRow(u) {
    const remove = () => attempt(async () => {
      await json(`/admin/users/${encodeURIComponent(u.name)}`, { method: "DELETE" });
      await refresh();
    });
    return el(
      "tr",
      { "data-user": u.name },
      el("td", {}, u.name),
      el("td", {}, new Date(u.created_at).toLocaleString()),
      el("td", {}, u.keys),
      el("td", { class: "actions" }, el("button", { type: "button", class: "quiet", onclick: remove }, "Delete")),
    );
  }

  async function refresh() {
    await attempt(async () => {
      const all = $("show-revoked").checked ? "?all=true" : "";
      const [keys, users] = await Promise.all([json(`/admin/keys${all}`), json("/admin/users")]);
      fill($("keys-table").querySelector("tbody"), keys.data.map(keyRow), "No keys.");
      fill($("users-table").querySelector("tbody"), users.data.map(userRow), "No users.");
    }, false);
  }

  async function create(event) {
    event.preventDefault();
    const models = $("key-models").value.split(",").map((s) => s.trim()).filter(Boolean);
    const body = {
      user: $("key-user").value.trim(),
      admin: $("key-admin").checked,
      name: $("key-name").value.trim() || undefined,
      models: models.length ? models : undefined,
      rpm: optionalInt("key-rpm"),
      tpm: optionalInt("key-tpm"),
      daily_tokens: optionalInt("key-daily"),
      max_concurrent: optionalInt("key-concurrent"),
      expires: $("key-expires").value.trim() || undefined,
    };
    await attempt(async () => {
      showSecret(await json("/admin/keys", { method: "POST", json: body }));
      await refresh();
    });
  }

  async function addUser(event) {
    event.preventDefault();
    await attempt(async () => {
      await json("/admin/users", { method: "POST", json: { name: $("user-name").value.trim() } });
      $("user-name").value = "";
      await refresh();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!Somner.key()) return;
    $("key-form").addEventListener("submit", create);
    $("user-form").addEventListener("submit", addUser);
    $("edit-form").addEventListener("submit", saveEdit);
    $("edit-cancel").addEventListener("click", () => {
      $("edit-card").hidden = true;
    });
    $("show-revoked").addEventListener("change", refresh);
    refresh();
  });
})();
