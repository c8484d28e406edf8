// The chat page: plain JavaScript, no framework. It talks to the same REST API and WebSocket as any
// client: REST for conversations and history, a WebSocket (single-use ?ticket=) for live frames.
// What people type is inserted with textContent, never as HTML. Replies are Markdown: rendered by
// the vendored marked with raw HTML escaped, then sanitized by the vendored DOMPurify, links opened
// with rel="noopener noreferrer". A message typed while a reply is still being written is queued
// and sent when the reply ends, never dropped.
(function () {
  "use strict";

  var cfg = JSON.parse(document.getElementById("chat-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var els = {
    orchestrator: $("orchestrator"),
    start: $("start"),
    list: $("conversations"),
    empty: $("no-conversations"),
    title: $("conversation-title"),
    connection: $("connection"),
    banner: $("banner"),
    messages: $("messages"),
    composer: $("composer"),
    input: $("input"),
    send: $("send"),
    cancel: $("cancel"),
  };

  var current = null;     // {id, orchestrator, title}
  var socket = null;
  var generation = 0;     // bumped whenever a socket is abandoned, so its late events are ignored
  var retryDelay = 1000;
  var retryTimer = null;
  var lastSeq = 0;        // highest seq of a message in its final state
  var busy = false;       // a turn is in flight (ours or another tab's)
  var bubbles = {};       // message id -> bubble
  var queue = [];         // messages typed while a reply is in flight: [{content, bubble}]
  var inflight = null;    // the queued message sent and not yet acknowledged by message.created
  var queuedCount = 0;
  var flushTimer = null;
  var pendingCheck = null; // the in-flight message when the socket dropped

  // --- Markdown ---------------------------------------------------------------------------------

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  var markdown = null;
  if (window.marked && window.DOMPurify) {
    markdown = new window.marked.Marked({ gfm: true, breaks: true, async: false });
    // Raw HTML in a reply is shown as text: a model's output is not markup for this page.
    markdown.use({ renderer: { html: function (token) { return escapeHtml(token.text); } } });
    window.DOMPurify.addHook("afterSanitizeAttributes", function (node) {
      if (node.tagName === "A" && node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
  }
  var ALLOWED_TAGS = ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "a", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "span"];

  function renderMarkdown(node, text) {
    if (!markdown) { node.textContent = text; return; }
    var html = markdown.parse(text || "");
    node.innerHTML = window.DOMPurify.sanitize(html.trim(), {
      ALLOWED_TAGS: ALLOWED_TAGS,
      ALLOWED_ATTR: ["href", "title", "class", "start", "align"],
      ALLOW_DATA_ATTR: false,
    });
  }

  function setBody(b, text) {
    b.raw = text || "";
    if (b.markdown) {
      renderMarkdown(b.body, b.raw);
    } else {
      b.body.textContent = b.raw;
    }
  }

  // Tokens arrive faster than frames are painted: render at most once per frame.
  function appendBody(b, delta) {
    b.raw = (b.raw || "") + delta;
    if (!b.markdown) { b.body.textContent = b.raw; return; }
    if (b.pending) return;
    b.pending = true;
    requestAnimationFrame(function () { b.pending = false; renderMarkdown(b.body, b.raw); });
  }

  // --- HTTP -------------------------------------------------------------------------------------

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return "";
  }

  function api(method, path, body) {
    var headers = { "Accept": "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = cookie("csrftoken");
    }
    return fetch(cfg.api + path, {
      method: method,
      credentials: "same-origin",
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      if (response.status === 204) return null;
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var err = (data && data.error) || {};
          throw new Error((err.message || "Request failed") + " (HTTP " + response.status + ")");
        }
        return data;
      });
    });
  }

  // --- status and errors ------------------------------------------------------------------------

  function showBanner(text) {
    els.banner.textContent = text;
    els.banner.hidden = false;
  }

  function clearBanner() {
    els.banner.textContent = "";
    els.banner.hidden = true;
  }

  function setConnection(state, text) {
    els.connection.dataset.state = state;
    els.connection.textContent = text;
    refreshControls();
  }

  function refreshControls() {
    var usable = cfg.canSend && current !== null;
    els.input.disabled = !usable;
    // Send stays usable during a reply: what is typed then waits in the queue.
    els.send.disabled = !usable;
    // Cancel goes over REST, so it works while the socket reconnects.
    els.cancel.disabled = !usable || !busy;
  }

  function setBusy(value) {
    busy = value;
    refreshControls();
    if (!busy) flush();
  }

  // --- rendering --------------------------------------------------------------------------------

  function format(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function bubble(id, role, seq) {
    var b = bubbles[id];
    if (!b) {
      var root = el("div", "msg msg-" + role);
      root.dataset.id = id;
      var who = el("div", "who", role === "user" ? "You" : (role === "assistant" ? (current && current.orchestrator) || "assistant" : role));
      var tools = el("div", "tools");
      var body = el("div", role === "assistant" ? "body md" : "body");
      var note = el("div", "note");
      var error = el("div", "error");
      error.hidden = true;
      note.hidden = true;
      root.append(who, tools, body, note, error);
      b = bubbles[id] = { root: root, tools: tools, body: body, note: note, error: error, seq: Infinity, status: "", raw: "", markdown: role === "assistant" };
      // Queued messages stay last, after whatever the server has stored.
      var firstQueued = els.messages.querySelector(".msg-queued");
      els.messages.insertBefore(root, firstQueued);
    }
    if (typeof seq === "number" && seq !== b.seq) {
      b.seq = seq;
      b.root.dataset.seq = String(seq);
      // Keep seq order: a message fetched on catch-up may belong before one already shown.
      var next = null;
      var nodes = els.messages.children;
      for (var i = 0; i < nodes.length; i++) {
        var other = bubbles[nodes[i].dataset.id];
        if (nodes[i].classList.contains("msg-queued") || (other && other !== b && other.seq > seq)) { next = nodes[i]; break; }
      }
      if (next !== b.root.nextSibling || next === null) els.messages.insertBefore(b.root, next);
    }
    return b;
  }

  function setStatus(b, status) {
    b.status = status;
    b.root.dataset.status = status;
    b.note.hidden = status !== "cancelled";
    b.note.textContent = status === "cancelled" ? "Cancelled." : "";
  }

  function setError(b, text) {
    b.error.textContent = text;
    b.error.hidden = !text;
  }

  function toolLine(b, kind, callId, text) {
    var key = kind + ":" + callId;
    var line = null;
    for (var i = 0; i < b.tools.children.length; i++) {
      if (b.tools.children[i].dataset.key === key) { line = b.tools.children[i]; break; }
    }
    if (!line) {
      line = el("div", "tool tool-" + kind);
      line.dataset.key = key;
      b.tools.appendChild(line);
    }
    line.textContent = text;
  }

  function callText(call) {
    return "Tool call: " + call.name + " " + format(call.arguments);
  }

  function resultText(call) {
    return call.error
      ? "Tool error: " + call.name + " → " + format(call.error)
      : "Tool result: " + call.name + " → " + format(call.result);
  }

  function scrollDown() {
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  function noteFinal(seq) {
    if (typeof seq === "number" && seq > lastSeq) lastSeq = seq;
  }

  // A stored message (REST), shown or updated in place.
  function renderStored(m) {
    var b = bubble(m.id, m.role, m.seq);
    setBody(b, m.content);
    (m.tool_calls || []).forEach(function (call, i) {
      var callId = call.id || String(i);
      toolLine(b, "call", callId, callText(call));
      if ("result" in call || call.error) toolLine(b, "result", callId, resultText(call));
    });
    setStatus(b, m.status);
    setError(b, m.error || "");
    if (m.status !== "streaming") noteFinal(m.seq);
  }

  function anyStreaming() {
    return Object.keys(bubbles).some(function (id) { return bubbles[id].status === "streaming"; });
  }

  // --- frames -----------------------------------------------------------------------------------

  function onFrame(frame) {
    var b;
    switch (frame.type) {
      case "message.created":
        if (inflight !== null && frame.message.role === "user" && frame.message.content === inflight.content) {
          inflight.bubble.remove();
          inflight = null;
        }
        renderStored(frame.message);
        b = bubble(frame.reply_to, "assistant", frame.reply_seq);
        setStatus(b, "streaming");
        setBusy(true);
        break;
      case "token":
        b = bubble(frame.message_id, "assistant");
        if (!b.status) setStatus(b, "streaming");
        appendBody(b, frame.delta);
        break;
      case "tool_call":
        toolLine(bubble(frame.message_id, "assistant"), "call", frame.id, callText(frame));
        break;
      case "tool_result":
        toolLine(bubble(frame.message_id, "assistant"), "result", frame.id, resultText(frame));
        break;
      case "error":
        var text = (frame.code ? frame.code + ": " : "") + (frame.message || "error");
        if (frame.message_id) {
          setError(bubble(frame.message_id, "assistant"), text);
        } else {
          // A refused frame (role, validation, another reply still running): no turn started.
          if (inflight !== null && frame.code === "turn_in_progress") {
            // Another tab or client is being answered: ours waits for that reply to end.
            queue.unshift(inflight);
            inflight = null;
            setBusy(true);
            flushLater();
            break;
          }
          if (inflight !== null) {
            // Refused for good: the text goes back into the box rather than being lost.
            inflight.bubble.remove();
            if (!els.input.value) els.input.value = inflight.content;
            inflight = null;
          }
          showBanner(text);
          setBusy(false);
        }
        break;
      case "done":
        b = bubble(frame.message_id, "assistant", frame.seq);
        // The stored content, complete even if this tab joined the stream halfway.
        setBody(b, frame.content || "");
        setStatus(b, frame.status);
        if (frame.error) setError(b, frame.error);
        noteFinal(frame.seq);
        setBusy(false);
        break;
      default:
        return; // step and future frame types: nothing to show
    }
    scrollDown();
  }

  // --- connection -------------------------------------------------------------------------------

  function catchUpFrom() {
    // Anything still streaming is fetched again: its stored state is newer than what we showed.
    var after = lastSeq;
    Object.keys(bubbles).forEach(function (id) {
      var b = bubbles[id];
      if (b.status === "streaming" && b.seq !== Infinity && b.seq - 1 < after) after = b.seq - 1;
    });
    return Math.max(0, after);
  }

  function catchUp(conversationId, after, check) {
    return api("GET", "conversations/" + conversationId + "/messages/?after=" + after).then(function (page) {
      if (!current || current.id !== conversationId) return null;
      page.results.forEach(function (m) {
        if (check && m.role === "user" && m.content === check.content) {
          check.bubble.remove();
          check = null;
        }
        renderStored(m);
      });
      scrollDown();
      if (page.next_after !== null && page.next_after !== undefined) return catchUp(conversationId, page.next_after, check);
      // A message sent just before the socket dropped that never arrived goes out again.
      if (check) queue.unshift(check);
      // A reply that ended while we were away is complete now; one still being written keeps
      // Send disabled until its done frame.
      setBusy(anyStreaming());
      return null;
    });
  }

  function disconnect() {
    generation++;
    clearTimeout(retryTimer);
    if (socket !== null) {
      var old = socket;
      socket = null;
      old.close();
    }
  }

  function connect() {
    var mine = ++generation;
    var conversation = current;
    setConnection("connecting", "connecting…");
    api("POST", "ws-tickets/").then(function (data) {
      if (mine !== generation) return;
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var url = scheme + location.host + cfg.ws + conversation.id + "/?ticket=" + encodeURIComponent(data.ticket);
      var ws = new WebSocket(url);
      socket = ws;
      ws.onopen = function () {
        if (mine !== generation) return;
        retryDelay = 1000;
        clearBanner();
        setConnection("open", "connected");
        // Whatever was written before this socket started reading (or while it was away).
        var check = pendingCheck;
        pendingCheck = null;
        catchUp(conversation.id, catchUpFrom(), check)
          .catch(function (err) { showBanner(err.message); })
          .then(function () { flush(); });
      };
      ws.onmessage = function (event) {
        if (mine !== generation) return;
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        onFrame(frame);
      };
      ws.onclose = function () {
        if (mine !== generation) return;
        socket = null;
        if (inflight !== null) {
          // Unknown whether it arrived: the catch-up on reconnect shows it if it did; otherwise
          // it goes out again.
          pendingCheck = inflight;
          inflight = null;
        }
        reconnectLater("Connection lost; reconnecting…");
      };
    }).catch(function (err) {
      if (mine !== generation) return;
      reconnectLater("Could not connect (" + err.message + "); retrying…");
    });
  }

  function reconnectLater(message) {
    setConnection("closed", "disconnected");
    showBanner(message);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(function () {
      if (current) connect();
    }, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 15000);
  }

  // --- conversations ----------------------------------------------------------------------------

  function listEntry(conversation) {
    var buttons = els.list.querySelectorAll("button.conversation");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].dataset.id === conversation.id) return buttons[i];
    }
    var button = el("button", "conversation");
    button.type = "button";
    button.dataset.id = conversation.id;
    button.dataset.orchestrator = conversation.orchestrator;
    button.dataset.title = conversation.title || "";
    button.append(el("span", "title", conversation.title || "Untitled"), el("span", "meta", conversation.orchestrator + " · just now"));
    var item = el("li");
    item.appendChild(button);
    els.list.insertBefore(item, els.list.firstChild);
    els.empty.hidden = true;
    return button;
  }

  function openConversation(conversation) {
    disconnect();
    current = conversation;
    bubbles = {};
    lastSeq = 0;
    busy = false;
    // A queue belongs to its conversation; switching away abandons what was not sent yet.
    queue = [];
    inflight = null;
    pendingCheck = null;
    els.messages.textContent = "";
    clearBanner();
    els.title.textContent = (conversation.title || "Untitled") + " — " + conversation.orchestrator;
    var buttons = els.list.querySelectorAll("button.conversation");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].classList.toggle("active", buttons[i].dataset.id === conversation.id);
    }
    history.replaceState(null, "", "#" + conversation.id);
    showSidebar(false);
    refreshControls();
    catchUp(conversation.id, 0)
      .catch(function (err) { showBanner("Could not load the messages: " + err.message); })
      .then(function () { if (current === conversation) connect(); });
  }

  function fromButton(button) {
    return { id: button.dataset.id, orchestrator: button.dataset.orchestrator, title: button.dataset.title };
  }

  function startConversation() {
    els.start.disabled = true;
    api("POST", "conversations/", { orchestrator: els.orchestrator.value })
      .then(function (data) {
        var conversation = { id: data.id, orchestrator: data.orchestrator_slug, title: data.title };
        listEntry(conversation);
        openConversation(conversation);
        els.input.focus();
      })
      .catch(function (err) { showBanner("Could not start a conversation: " + err.message); })
      .then(function () { els.start.disabled = !cfg.canSend; });
  }

  function nameAfterFirstMessage(conversation, content) {
    if (conversation.title) return;
    var title = content.trim().slice(0, 80);
    conversation.title = title;
    api("PATCH", "conversations/" + conversation.id + "/", { title: title }).then(function () {
      var button = listEntry(conversation);
      button.dataset.title = title;
      button.querySelector(".title").textContent = title;
      if (current === conversation) els.title.textContent = title + " — " + conversation.orchestrator;
    }).catch(function () { conversation.title = ""; });
  }

  function send() {
    var content = els.input.value;
    if (!content.trim() || current === null || !cfg.canSend) return;
    clearBanner();
    els.input.value = "";
    var b = el("div", "msg msg-user msg-queued");
    b.dataset.status = "queued";
    b.dataset.id = "queued-" + (++queuedCount);
    b.append(el("div", "who", "You"), el("div", "body", content), el("div", "note", "Queued: sent when the reply ends."));
    els.messages.appendChild(b);
    queue.push({ content: content, bubble: b });
    nameAfterFirstMessage(current, content);
    scrollDown();
    flush();
  }

  // Sends the next queued message once nothing is in flight and the socket is open.
  function flush() {
    if (inflight !== null || busy || queue.length === 0) return;
    if (socket === null || socket.readyState !== WebSocket.OPEN) return; // onopen flushes
    inflight = queue.shift();
    inflight.bubble.querySelector(".note").textContent = "Sending…";
    socket.send(JSON.stringify({ type: "message", content: inflight.content }));
    setBusy(true);
  }

  // A reply elsewhere whose end this tab never hears about must not hold the queue forever.
  function flushLater() {
    clearTimeout(flushTimer);
    flushTimer = setTimeout(function () {
      if (inflight === null && queue.length && busy && !anyStreaming()) setBusy(false);
      else if (queue.length) flushLater();
    }, 1500);
  }

  // --- wiring -----------------------------------------------------------------------------------

  // On a narrow screen the conversation list folds away behind a button.
  var toggle = $("toggle-sidebar");
  function showSidebar(open) {
    document.body.classList.toggle("sidebar-open", open);
    if (toggle) toggle.setAttribute("aria-expanded", open ? "true" : "false");
  }
  if (toggle) toggle.addEventListener("click", function () {
    showSidebar(!document.body.classList.contains("sidebar-open"));
  });

  if (els.start) els.start.addEventListener("click", startConversation);
  els.list.addEventListener("click", function (event) {
    var button = event.target.closest("button.conversation");
    if (button) openConversation(fromButton(button));
  });
  els.composer.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });
  els.input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  // Cancel is a request with an answer, not a frame that a reconnecting socket could drop.
  els.cancel.addEventListener("click", function () {
    if (current === null) return;
    els.cancel.disabled = true;
    api("POST", "conversations/" + current.id + "/cancel/").catch(function (err) {
      showBanner("Could not cancel: " + err.message);
      refreshControls();
    });
  });

  // A reload comes back to the conversation in the address (#<id>), if it is still in the list.
  var wanted = location.hash.slice(1);
  if (wanted) {
    var buttons = els.list.querySelectorAll("button.conversation");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].dataset.id === wanted) { openConversation(fromButton(buttons[i])); break; }
    }
  }
  // Nothing open yet: on a phone, start on the list (where a conversation is started or picked).
  if (current === null) showSidebar(true);
})();
