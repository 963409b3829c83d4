// GopherPost web UI: plain JavaScript, no framework, no build step.
// Message data only ever reaches the page through textContent and
// attributes set one by one; the HTML body is shown by the server's
// sanitized view in an iframe sandboxed without scripts and without our
// origin.
"use strict";

(function () {
  const PAGE = 50;
  const state = { start: 0, query: "", total: 0, count: 0, current: null, release: false, tab: "html" };
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function csrfHeaders(json) {
    const headers = {};
    if (json) headers["Content-Type"] = "application/json";
    return headers;
  }

  async function api(method, path, body) {
    const options = { method, headers: csrfHeaders(body !== undefined), credentials: "same-origin" };
    if (body !== undefined) options.body = JSON.stringify(body);
    const response = await fetch(path, options);
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw new Error(text.trim() || response.status + " " + response.statusText);
    }
    const type = response.headers.get("Content-Type") || "";
    return type.startsWith("application/json") ? response.json() : response.text();
  }

  function showError(error) {
    const box = $("error");
    if (!error) { box.hidden = true; box.textContent = ""; return; }
    box.hidden = false;
    box.textContent = String(error.message || error);
  }

  function addressText(a) {
    if (!a) return "";
    return a.Name ? a.Name + " <" + a.Address + ">" : a.Address;
  }

  function shortAddress(a) {
    if (!a) return "";
    return a.Name || a.Address;
  }

  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
  }

  function size(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  // -- the list ------------------------------------------------------------

  let loading = null;
  let again = false;

  async function loadList() {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      try {
        const q = state.query;
        const path = q
          ? "/api/v1/search?query=" + encodeURIComponent(q) + "&start=" + state.start + "&limit=" + PAGE
          : "/api/v1/messages?start=" + state.start + "&limit=" + PAGE;
        const data = await api("GET", path);
        showError(null);
        renderList(data);
      } catch (error) {
        showError(error);
      }
    })();
    await loading;
    loading = null;
    if (again) { again = false; return loadList(); }
  }

  function renderList(data) {
    state.total = data.messages_count;
    const list = $("messages");
    list.replaceChildren();
    if (!data.messages.length) {
      list.appendChild(el("li", "empty", state.query ? "No messages match." : "No messages yet."));
    }
    for (const m of data.messages) {
      const li = el("li", m.Read ? "" : "unread");
      li.dataset.id = m.ID;
      if (state.current && state.current.ID === m.ID) li.classList.add("selected");
      const from = el("span", "from", shortAddress(m.From) || "(no sender)");
      const time = el("span", "time", when(m.Created));
      time.title = new Date(m.Created).toLocaleString();
      const subject = el("span", "subject" + (m.Attachments ? " clip" : ""), m.Subject || "(no subject)");
      const sz = el("span", "size", size(m.Size));
      const to = el("span", "to", "To: " + (m.To || []).map(shortAddress).join(", "));
      li.append(from, time, subject, sz, to);
      li.addEventListener("click", () => openMessage(m.ID));
      list.appendChild(li);
    }
    const end = Math.min(state.start + data.messages.length, state.total);
    $("page").textContent = state.total ? (state.start + 1) + "\u2013" + end + " of " + state.total : "";
    $("counts").textContent = data.total + " messages, " + data.unread + " unread";
    $("newer").disabled = state.start === 0;
    $("older").disabled = end >= state.total;
  }

  // -- one message -----------------------------------------------------------

  function selectTab(name) {
    state.tab = name;
    for (const button of $("tabs").querySelectorAll("button")) {
      button.classList.toggle("active", button.dataset.tab === name);
    }
    for (const tab of ["html", "text", "headers", "raw", "attachments", "delivery"]) {
      $("tab-" + tab).hidden = tab !== name;
    }
    if (state.current) loadTab(name, state.current);
  }

  async function loadTab(name, message) {
    const id = message.ID;
    try {
      if (name === "headers") {
        const headers = await api("GET", "/api/v1/message/" + id + "/headers");
        const table = $("header-table");
        table.replaceChildren();
        for (const key of Object.keys(headers)) {
          for (const value of headers[key]) {
            const row = el("tr");
            row.append(el("td", "", key), el("td", "", value));
            table.appendChild(row);
          }
        }
      } else if (name === "raw") {
        $("raw").textContent = await api("GET", "/api/v1/message/" + id + "/raw");
      } else if (name === "delivery") {
        const d = await api("GET", "/api/v1/message/" + id + "/gopherpost");
        const table = $("delivery");
        table.replaceChildren();
        const row = (k, v) => { const r = el("tr"); r.append(el("td", "", k), el("td", "", v)); table.appendChild(r); };
        row("Received", new Date(d.Received).toLocaleString());
        row("MAIL FROM", d.MailFrom || "<>");
        row("Client", d.Client.Address + " (" + d.Client.Helo + ")");
        row("TLS", d.TLS ? "yes" : "no");
        if (d.Username) row("Authenticated", d.Username);
        for (const r of d.Recipients) {
          let text = r.Status;
          if (r.Attempts) text += ", " + r.Attempts + " attempts";
          if (r.LastError) text += ", last error: " + r.LastError;
          if (r.NextAttempt) text += ", next: " + new Date(r.NextAttempt).toLocaleString();
          row("RCPT TO " + r.Address, text);
        }
      }
    } catch (error) {
      showError(error);
    }
  }

  function hasRemoteImages(html) {
    return /<img\b[^>]*\bsrc\s*=\s*["']?\s*(https?:|\/\/)|url\(\s*["']?\s*(https?:|\/\/)/i.test(html || "");
  }

  async function openMessage(id) {
    let message;
    try {
      message = await api("GET", "/api/v1/message/" + encodeURIComponent(id));
    } catch (error) {
      showError(error);
      return;
    }
    state.current = message;
    if (location.hash !== "#/message/" + message.ID) history.replaceState(null, "", "#/message/" + message.ID);
    $("main").classList.add("viewing");
    $("view-pane").hidden = false;
    for (const li of $("messages").children) li.classList.toggle("selected", li.dataset.id === message.ID);
    const row = $("messages").querySelector('li[data-id="' + CSS.escape(message.ID) + '"]');
    if (row) row.classList.remove("unread");
    $("subject").textContent = message.Subject || "(no subject)";
    const summary = $("summary");
    summary.replaceChildren();
    const field = (k, v) => { if (v) summary.append(el("dt", "", k), el("dd", "", v)); };
    field("From", addressText(message.From));
    field("To", (message.To || []).map(addressText).join(", "));
    field("Cc", (message.Cc || []).map(addressText).join(", "));
    field("Bcc", (message.Bcc || []).map(addressText).join(", "));
    field("Reply-To", (message.ReplyTo || []).map(addressText).join(", "));
    field("Date", new Date(message.Date).toLocaleString());
    field("Size", size(message.Size));
    if ((message.Tags || []).length) field("Tags", message.Tags.join(", "));
    $("toggle-read").textContent = "Mark unread";
    $("download").href = "/api/v1/message/" + message.ID + "/raw";
    $("download").setAttribute("download", message.ID + ".eml");
    $("release").hidden = !state.release;
    $("text").textContent = message.Text || "";
    const frame = $("html-frame");
    if (message.HTML) {
      frame.hidden = false;
      $("no-html").hidden = true;
      frame.src = "/view/" + message.ID + ".html";
      $("images-bar").hidden = !hasRemoteImages(message.HTML);
    } else {
      frame.hidden = true;
      frame.removeAttribute("src");
      $("no-html").hidden = false;
      $("images-bar").hidden = true;
    }
    const attachments = $("attachments");
    attachments.replaceChildren();
    const parts = (message.Attachments || []).concat(message.Inline || []);
    if (!parts.length) attachments.appendChild(el("li", "muted", "No attachments."));
    for (const part of parts) {
      const li = el("li");
      const link = el("a", "", part.FileName || part.ContentID || "part " + part.PartID);
      link.href = "/api/v1/message/" + message.ID + "/part/" + encodeURIComponent(part.PartID);
      link.setAttribute("download", part.FileName || "part-" + part.PartID);
      li.append(link, el("span", "muted", " " + part.ContentType + ", " + size(part.Size)));
      attachments.appendChild(li);
    }
    selectTab(message.HTML ? (state.tab === "text" && !message.Text ? "html" : state.tab) : (state.tab === "html" ? "text" : state.tab));
  }

  function closeMessage() {
    state.current = null;
    $("main").classList.remove("viewing");
    $("view-pane").hidden = true;
    $("html-frame").removeAttribute("src");
    history.replaceState(null, "", "#/");
    for (const li of $("messages").children) li.classList.remove("selected");
  }

  // -- actions ---------------------------------------------------------------

  async function run(action) {
    try {
      await action();
      showError(null);
    } catch (error) {
      showError(error);
    }
    loadList();
  }

  function wire() {
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.query = $("search").value.trim();
      state.start = 0;
      loadList();
    });
    $("search").addEventListener("search", () => {
      state.query = $("search").value.trim();
      state.start = 0;
      loadList();
    });
    $("newer").addEventListener("click", () => { state.start = Math.max(0, state.start - PAGE); loadList(); });
    $("older").addEventListener("click", () => { state.start += PAGE; loadList(); });
    $("back").addEventListener("click", closeMessage);
    $("home").addEventListener("click", (event) => {
      event.preventDefault();
      $("search").value = "";
      state.query = "";
      state.start = 0;
      closeMessage();
      loadList();
    });
    for (const button of $("tabs").querySelectorAll("button")) {
      button.addEventListener("click", () => selectTab(button.dataset.tab));
    }
    $("load-images").addEventListener("click", () => {
      if (!state.current) return;
      $("html-frame").src = "/view/" + state.current.ID + ".html?images=1";
      $("images-bar").hidden = true;
    });
    $("delete").addEventListener("click", () => {
      if (!state.current) return;
      const id = state.current.ID;
      closeMessage();
      run(() => api("DELETE", "/api/v1/messages", { IDs: [id] }));
    });
    $("toggle-read").addEventListener("click", () => {
      if (!state.current) return;
      const unread = $("toggle-read").textContent === "Mark unread";
      $("toggle-read").textContent = unread ? "Mark read" : "Mark unread";
      run(() => api("PUT", "/api/v1/messages", { IDs: [state.current.ID], Read: !unread }));
    });
    $("release").addEventListener("click", () => {
      if (!state.current) return;
      const to = window.prompt("Release this message to (comma-separated addresses):");
      if (!to) return;
      const addresses = to.split(",").map((a) => a.trim()).filter(Boolean);
      run(() => api("POST", "/api/v1/message/" + state.current.ID + "/release", { To: addresses }));
    });
    $("mark-all-read").addEventListener("click", () => run(() => api("PUT", "/api/v1/messages", { Read: true })));
    $("delete-all").addEventListener("click", () => {
      if (!window.confirm("Delete every message?")) return;
      closeMessage();
      run(() => api("DELETE", "/api/v1/messages", {}));
    });
  }

  // -- live updates ------------------------------------------------------------

  let refreshTimer = null;
  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; loadList(); }, 200);
  }

  function listen() {
    const live = $("live");
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); refreshSoon(); });
    source.addEventListener("error", () => { live.textContent = "reconnecting\u2026"; live.classList.remove("on"); });
    for (const kind of ["new", "delete", "update", "prune"]) {
      source.addEventListener(kind, refreshSoon);
    }
  }

  async function start() {
    wire();
    try {
      const config = await api("GET", "/api/v1/webui");
      state.release = Boolean(config.MessageRelay && config.MessageRelay.Enabled);
    } catch (error) {
      showError(error);
    }
    await loadList();
    const match = /^#\/message\/([A-Za-z0-9]+)$/.exec(location.hash);
    if (match) openMessage(match[1]);
    listen();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
