// Users page: talks to the backend through nginx, which proxies /api/ to it with the
// prefix stripped (/api/users -> backend /users). Root-relative URLs only, so the page
// works whatever host name or address it is served from.
"use strict";

const USERS_URL = "/api/users";
const READY_URL = "/api/ready";
const PAGE_SIZE = 20;

let skip = 0;

function byId(id) {
  return document.getElementById(id);
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") {
      return body.detail;
    }
    if (Array.isArray(body.detail) && body.detail.length > 0) {
      return body.detail.map((item) => item.msg).join("; ");
    }
  } catch (ignored) {
    // Not JSON (for example nginx's own 502 page): fall back to the status line.
  }
  return `${response.status} ${response.statusText}`;
}

async function showBackendStatus() {
  const label = byId("backend-status");
  try {
    const response = await fetch(READY_URL);
    const body = await response.json();
    label.textContent = response.ok ? "Backend ready" : `Backend not ready: ${body.reason}`;
    label.className = response.ok ? "status ok" : "status bad";
  } catch (error) {
    label.textContent = "Backend unreachable";
    label.className = "status bad";
  }
}

function userRow(user) {
  const row = document.createElement("tr");
  for (const value of [user.id, user.name, user.email, new Date(user.created_at).toLocaleString()]) {
    const cell = document.createElement("td");
    cell.textContent = String(value); // textContent: names are never parsed as HTML
    row.append(cell);
  }
  const actions = document.createElement("td");
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Delete";
  remove.addEventListener("click", () => deleteUser(user));
  actions.append(remove);
  row.append(actions);
  return row;
}

async function loadUsers() {
  const list = byId("users");
  // One extra row tells whether there is a next page.
  const response = await fetch(`${USERS_URL}?skip=${skip}&limit=${PAGE_SIZE + 1}`);
  if (!response.ok) {
    setMessage(`Could not load users: ${await errorText(response)}`, true);
    return;
  }
  const users = await response.json();
  list.replaceChildren(...users.slice(0, PAGE_SIZE).map(userRow));
  byId("empty").hidden = users.length > 0;
  byId("prev").disabled = skip === 0;
  byId("next").disabled = users.length <= PAGE_SIZE;
  byId("page-label").textContent = `Page ${Math.floor(skip / PAGE_SIZE) + 1}`;
}

function setMessage(text, isError) {
  const message = byId("form-message");
  message.textContent = text;
  message.className = isError ? "message bad" : "message ok";
}

async function addUser(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const response = await fetch(USERS_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: data.get("name"), email: data.get("email") }),
  });
  if (response.status === 201) {
    const user = await response.json();
    setMessage(`Added ${user.name} (id ${user.id})`, false);
    form.reset();
    await loadUsers();
  } else {
    setMessage(`Could not add user: ${await errorText(response)}`, true);
  }
}

async function deleteUser(user) {
  if (!window.confirm(`Delete ${user.name}?`)) {
    return;
  }
  const response = await fetch(`${USERS_URL}/${encodeURIComponent(user.id)}`, { method: "DELETE" });
  if (response.status === 204 || response.status === 404) {
    setMessage(`Deleted ${user.name}`, false);
  } else {
    setMessage(`Could not delete user: ${await errorText(response)}`, true);
  }
  await loadUsers();
}

document.addEventListener("DOMContentLoaded", () => {
  byId("add-user").addEventListener("submit", addUser);
  byId("prev").addEventListener("click", () => {
    skip = Math.max(0, skip - PAGE_SIZE);
    loadUsers();
  });
  byId("next").addEventListener("click", () => {
    skip += PAGE_SIZE;
    loadUsers();
  });
  showBackendStatus();
  loadUsers();
});
