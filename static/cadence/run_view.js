// The run view (engine/runs/pages.py): everything through the REST API and the run's WebSocket,
// with the user's session. Panels whose endpoint answers 404 (lineage, logs, replay) are hidden.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("run-config").textContent);
  var TERMINAL = { succeeded: 1, failed: 1, cancelled: 1 };
  var state = {
    run: null,
    steps: {}, // seq -> step object as GET …/steps/ gives it
    selected: null,
    cursor: null,
    lineage: null, // {nodes, edges} when the endpoint exists
    lineageAvailable: false,
    replayAvailable: false,
    logs: [],
    logsAvailable: false,
    drawing: false,
    redraw: false,
    pollTimer: null,
    socket: null,
  };

  function $(id) { return document.getElementById(id); }
  function text(el, value) { el.textContent = value == null ? "" : String(value); }
  function csrf() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }
  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    if (options.body) {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrf();
    }
    return fetch(config.api + path, {
      method: options.method || "GET",
      credentials: "same-origin",
      headers: headers,
      body: options.body ? JSON.stringify(options.body) : undefined,
    }).then(function (response) {
      return response.text().then(function (body) {
        var data = null;
        try { data = body ? JSON.parse(body) : null; } catch (e) { data = null; }
        return { status: response.status, ok: response.ok, data: data };
      });
    });
  }
  function json(value) {
    if (value === undefined || value === null) return "—";
    return JSON.stringify(value, null, 2);
  }
  function sortedSteps() {
    return Object.keys(state.steps).map(function (k) { return state.steps[k]; })
      .sort(function (a, b) { return a.seq - b.seq; });
  }
  function statusClass(status) {
    return { completed: "completed", failed: "failed", running: "running", interrupted: "interrupted" }[status] || "other";
  }

  // --- summary -------------------------------------------------------------------------------
  function showRun(run) {
    state.run = run;
    var status = $("run-status");
    text(status, run.status);
    status.className = "run-status status-" + run.status;
    text($("run-duration"), run.duration_ms == null ? "running" : run.duration_ms.toFixed(1) + " ms");
    var error = $("run-error");
    if (run.error) {
      // The recorded message already starts with its code ("llm_timeout: …").
      text(error, run.error.message || run.error.code);
      error.hidden = false;
    }
  }

  // --- the flow diagram ----------------------------------------------------------------------
  function label(step) {
    var name = String(step.name || step.kind || "step").replace(/[^A-Za-z0-9 _.:\/()-]/g, "_").slice(0, 60);
    return step.seq + ". " + name + " (" + String(step.kind || "").replace(/[^a-z_]/g, "") + ")";
  }
  var MAX_DRAWN = 300; // mermaid refuses very large graphs; the table and timeline show all
  function diagramSource(steps) {
    var lines = ["flowchart TD", '  run(["run"])'];
    if (steps.length > MAX_DRAWN) {
      lines.push('  more["… ' + (steps.length - MAX_DRAWN) + ' more steps in the table"]');
      steps = steps.slice(0, MAX_DRAWN);
    }
    var lastChild = {}; // parent seq (0: the run) -> last child's seq, for the order among siblings
    steps.forEach(function (step) {
      lines.push("  s" + step.seq + '["' + label(step) + '"]:::' + statusClass(step.status));
      var parent = step.parent || 0;
      var from = lastChild[parent] ? "s" + lastChild[parent] : parent ? "s" + parent : "run";
      lines.push("  " + from + (lastChild[parent] ? " --> " : " -.-> ") + "s" + step.seq);
      lastChild[parent] = step.seq;
    });
    if (state.lineage && state.lineage.edges) {
      state.lineage.edges.forEach(function (edge) {
        if (edge.from == null || !state.steps[edge.from] || !state.steps[edge.to]) return;
        if (edge.from > MAX_DRAWN || edge.to > MAX_DRAWN) return;
        var field = String(edge.field || "").replace(/[^A-Za-z0-9_.]/g, "_").slice(0, 40);
        lines.push("  s" + edge.from + " == " + (field || "value") + " ==> s" + edge.to);
      });
    }
    lines.push("  classDef completed fill:#dcfce7,stroke:#15803d,color:#14532d");
    lines.push("  classDef failed fill:#fee2e2,stroke:#b91c1c,color:#7f1d1d");
    lines.push("  classDef running fill:#dbeafe,stroke:#1d4ed8,color:#1e3a8a");
    lines.push("  classDef interrupted fill:#fef3c7,stroke:#b45309,color:#78350f");
    lines.push("  classDef other fill:#f3f4f6,stroke:#6b7280,color:#111827");
    return lines.join("\n");
  }
  var diagramCount = 0;
  function drawDiagram() {
    var box = $("run-diagram");
    if (typeof mermaid === "undefined") { text(box, "The diagram library did not load."); return; }
    if (state.drawing) { state.redraw = true; return; }
    state.drawing = true;
    var source = diagramSource(sortedSteps());
    diagramCount += 1;
    mermaid.render("run-diagram-svg-" + diagramCount, source).then(function (out) {
      box.innerHTML = out.svg; // mermaid's own output, rendered with securityLevel "strict"
      box.dataset.drawn = "1";
      box.dataset.steps = String(sortedSteps().length);
      box.querySelectorAll("g.node").forEach(function (node) {
        var match = /s(\d+)/.exec(node.id || "");
        if (!match || !state.steps[match[1]]) return;
        node.style.cursor = "pointer";
        node.addEventListener("click", function () { select(Number(match[1])); });
      });
    }).catch(function (error) {
      text(box, "The diagram could not be drawn: " + error);
    }).then(function () {
      state.drawing = false;
      if (state.redraw) { state.redraw = false; drawDiagram(); }
    });
  }

  // --- the timeline --------------------------------------------------------------------------
  function drawTimeline() {
    var box = $("run-timeline");
    var steps = sortedSteps().filter(function (s) { return s.started_at; });
    box.textContent = "";
    if (!steps.length) { text(box, "No timed steps yet."); return; }
    var start = Infinity, end = -Infinity;
    steps.forEach(function (s) {
      var t0 = Date.parse(s.started_at);
      var t1 = s.duration_ms != null ? t0 + s.duration_ms : s.finished_at ? Date.parse(s.finished_at) : Date.now();
      s._t0 = t0; s._t1 = Math.max(t1, t0);
      start = Math.min(start, t0); end = Math.max(end, s._t1);
    });
    var span = Math.max(end - start, 1);
    steps.forEach(function (s) {
      var row = document.createElement("div");
      row.className = "timeline-row";
      row.setAttribute("role", "listitem");
      row.dataset.seq = s.seq;
      var name = document.createElement("span");
      name.className = "timeline-name";
      text(name, s.seq + ". " + s.name);
      var track = document.createElement("span");
      track.className = "timeline-track";
      var bar = document.createElement("span");
      bar.className = "timeline-bar " + statusClass(s.status);
      bar.style.left = ((s._t0 - start) / span * 100).toFixed(3) + "%";
      bar.style.width = Math.max((s._t1 - s._t0) / span * 100, 0.5).toFixed(3) + "%";
      bar.title = s.name + ": " + (s.duration_ms != null ? s.duration_ms.toFixed(1) + " ms" : s.status);
      track.appendChild(bar);
      row.appendChild(name);
      row.appendChild(track);
      row.addEventListener("click", function () { select(s.seq); });
      box.appendChild(row);
    });
  }

  // --- the step table ------------------------------------------------------------------------
  function drawTable() {
    var body = $("step-table").querySelector("tbody");
    body.textContent = "";
    sortedSteps().forEach(function (s) {
      var tr = document.createElement("tr");
      tr.dataset.seq = s.seq;
      tr.className = "step-row status-" + statusClass(s.status) + (state.selected === s.seq ? " selected" : "");
      [s.seq, s.parent == null ? "" : s.parent, s.kind, s.name, s.status,
       s.duration_ms == null ? "" : s.duration_ms.toFixed(1) + " ms"].forEach(function (value, i) {
        var td = document.createElement("td");
        text(td, value);
        if (i === 4) td.className = "step-status";
        tr.appendChild(td);
      });
      tr.tabIndex = 0;
      tr.addEventListener("click", function () { select(s.seq); });
      tr.addEventListener("keydown", function (e) { if (e.key === "Enter") select(s.seq); });
      body.appendChild(tr);
    });
  }

  function redrawAll() {
    drawTable();
    drawTimeline();
    drawDiagram();
    if (state.selected != null && state.steps[state.selected]) showStep(state.steps[state.selected]);
  }

  // --- one step ------------------------------------------------------------------------------
  function select(seq) {
    state.selected = seq;
    var step = state.steps[seq];
    if (!step) return;
    document.querySelectorAll("#step-table tr.selected").forEach(function (tr) { tr.classList.remove("selected"); });
    var row = document.querySelector('#step-table tr[data-seq="' + seq + '"]');
    if (row) row.classList.add("selected");
    $("lineage-panel").hidden = true;
    $("replay-result").hidden = true;
    showStep(step);
    if (step.truncated && !step._whole) {
      api("steps/" + seq + "/payload/").then(function (r) {
        if (!r.ok || !r.data) return;
        step._whole = r.data.data || {};
        if (state.selected === seq) showStep(step);
      });
    }
  }

  function showStep(step) {
    var panel = $("step-detail");
    panel.hidden = false;
    var data = step._whole || {};
    var inputs = data.inputs !== undefined ? data.inputs : step.inputs;
    var outputs = data.outputs !== undefined ? data.outputs : step.outputs;
    text($("step-title"), "Step " + step.seq + ": " + step.name + " (" + step.kind + ", " + step.status + ")");
    text($("step-inputs"), json(inputs));
    text($("step-outputs"), json(outputs));
    drawDiff(inputs, outputs, step.detail);
    var llm = data.llm !== undefined ? data.llm : step.llm;
    $("step-llm-block").hidden = !llm;
    text($("step-llm"), json(llm));
    var error = step.error;
    $("step-error-block").hidden = !error;
    if (error) {
      text($("step-error"), (error.type ? error.type + ": " : "") + (error.message || ""));
      text($("step-stack"), error.stack || "");
    }
    var res = step.resources || {};
    var parts = [];
    if (step.duration_ms != null) parts.push("wall " + step.duration_ms.toFixed(1) + " ms");
    if (res.cpu_ms != null) parts.push("CPU " + Number(res.cpu_ms).toFixed(1) + " ms");
    if (res.memory_kb != null) parts.push("memory " + (res.memory_kb >= 0 ? "+" : "") + res.memory_kb + " KiB");
    text($("step-resources"), parts.length ? parts.join(" · ") : "not measured");
    drawLineageFields(step, inputs);
    $("step-actions").hidden = !(config.canReplay && state.replayAvailable && TERMINAL[(state.run || {}).status]);
  }

  function drawDiff(inputs, outputs, detail) {
    var body = $("step-diff").querySelector("tbody");
    body.textContent = "";
    var before = inputs && typeof inputs === "object" && !Array.isArray(inputs) ? inputs : {};
    var after = outputs && typeof outputs === "object" && !Array.isArray(outputs) ? outputs : {};
    var changes = detail && detail.changes && typeof detail.changes === "object" ? detail.changes : null;
    var rows = [];
    if (changes) {
      Object.keys(changes).forEach(function (field) {
        var c = changes[field] || {};
        rows.push([field, c.before, c.after]);
      });
    } else {
      Object.keys(after).forEach(function (field) {
        var was = Object.prototype.hasOwnProperty.call(before, field) ? before[field] : undefined;
        if (JSON.stringify(was) !== JSON.stringify(after[field])) rows.push([field, was, after[field]]);
      });
    }
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = 3;
      text(td, "No field changed.");
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      [row[0], row[1] === undefined ? "—" : JSON.stringify(row[1]), JSON.stringify(row[2])].forEach(function (value) {
        var td = document.createElement("td");
        var code = document.createElement("code");
        text(code, value);
        td.appendChild(code);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  // --- lineage -------------------------------------------------------------------------------
  function drawLineageFields(step, inputs) {
    var box = $("lineage-fields");
    box.textContent = "";
    var fields = inputs && typeof inputs === "object" && !Array.isArray(inputs) ? Object.keys(inputs) : [];
    box.hidden = !state.lineageAvailable || !fields.length;
    if (box.hidden) return;
    var lead = document.createElement("span");
    text(lead, "Where did it come from? ");
    box.appendChild(lead);
    fields.forEach(function (field) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "button lineage-button";
      text(button, field);
      button.addEventListener("click", function () { showLineage(step.seq, field); });
      box.appendChild(button);
    });
  }

  function showLineage(seq, field) {
    var query = "lineage/?step=" + encodeURIComponent(seq) + "&field=" + encodeURIComponent(field);
    api(query).then(function (r) {
      var panel = $("lineage-panel");
      var list = $("lineage-chain");
      list.textContent = "";
      text($("lineage-field"), field);
      panel.hidden = false;
      if (r.status === 404 && !(r.data && r.data.error && r.data.error.code !== "not_found")) {
        // No lineage endpoint on this server.
        state.lineageAvailable = false;
        panel.hidden = true;
        $("lineage-fields").hidden = true;
        return;
      }
      if (!r.ok) {
        var li = document.createElement("li");
        text(li, (r.data && r.data.error && r.data.error.message) || "The lineage could not be read.");
        list.appendChild(li);
        return;
      }
      (r.data.chain || []).forEach(function (link) {
        var li = document.createElement("li");
        var where = link.seq == null ? "the run's input" : "step " + link.seq + " " + link.name + " (" + link.kind + ")";
        text(li, where + " · " + link.field + " = " + (link.value_preview == null ? "" : link.value_preview));
        if (link.seq != null) {
          li.className = "lineage-link";
          li.addEventListener("click", function () { select(link.seq); });
        }
        list.appendChild(li);
      });
    });
  }

  // --- the log -------------------------------------------------------------------------------
  function logLine(line) {
    var li = document.createElement("li");
    li.className = "log-" + String(line.level || "info").toLowerCase().replace(/[^a-z]/g, "");
    var at = line.at ? new Date(line.at).toISOString().slice(11, 23) : "";
    text(li, [at, String(line.level || "").toUpperCase(), line.step != null ? "step " + line.step : "", line.message]
      .filter(function (x) { return x !== ""; }).join("  "));
    $("run-log-lines").appendChild(li);
  }
  function loadLogs() {
    return api("logs/").then(function (r) {
      if (r.status === 404 || !r.ok || !r.data) { $("run-log").hidden = true; return; }
      state.logsAvailable = true;
      $("run-log").hidden = false;
      $("run-log-lines").textContent = "";
      var lines = r.data.results || r.data.logs || r.data.lines || [];
      lines.forEach(logLine);
    });
  }

  // --- replay --------------------------------------------------------------------------------
  function replay(body) {
    var out = $("replay-result");
    out.hidden = false;
    text(out, "Replaying…");
    api("replay/", { method: "POST", body: body }).then(function (r) {
      out.textContent = "";
      if (r.status === 404 && !(r.data && r.data.error && r.data.error.code !== "not_found")) {
        state.replayAvailable = false;
        $("step-actions").hidden = true;
        out.hidden = true;
        return;
      }
      if (!r.ok) {
        text(out, "Replay refused: " + ((r.data && r.data.error && r.data.error.message) || r.status));
        return;
      }
      var head = document.createElement("p");
      var link = document.createElement("a");
      link.href = config.page + encodeURIComponent(r.data.id) + "/view/";
      text(link, "replay " + r.data.id);
      head.appendChild(link);
      head.appendChild(document.createTextNode(" · " + r.data.status));
      out.appendChild(head);
      var diff = r.data.diff || {};
      var keys = Object.keys(diff);
      var p = document.createElement("pre");
      p.className = "run-json";
      text(p, keys.length ? keys.map(function (k) {
        return k + ": " + JSON.stringify(diff[k].before) + " → " + JSON.stringify(diff[k].after);
      }).join("\n") : "Same outputs as the original.");
      out.appendChild(p);
    });
  }

  function probeOptional() {
    // Which optional endpoints this server has: each answers 404 when it does not.
    var probes = [
      api("lineage/").then(function (r) {
        state.lineageAvailable = r.ok;
        if (r.ok && r.data && r.data.edges) { state.lineage = r.data; }
      }),
      loadLogs(),
    ];
    if (config.canReplay) {
      probes.push(fetch(config.api + "replay/", { method: "OPTIONS", credentials: "same-origin" })
        .then(function (r) { state.replayAvailable = r.status !== 404; }));
    }
    return Promise.all(probes.map(function (p) { return p.catch(function () { return null; }); }));
  }

  // --- live ----------------------------------------------------------------------------------
  function setLive(value) { text($("live-state"), value); $("live-state").dataset.state = value; }

  function applyFrame(frame) {
    if (frame.cursor != null) state.cursor = frame.cursor;
    if (frame.type === "step" && frame.seq != null) {
      var step = {};
      Object.keys(frame).forEach(function (k) { if (k !== "type" && k !== "cursor") step[k] = frame[k]; });
      state.steps[step.seq] = Object.assign(state.steps[step.seq] || {}, step);
      scheduleRedraw();
    } else if (frame.type === "log") {
      if (state.logsAvailable || !$("run-log").hidden) logLine(frame);
      else { $("run-log").hidden = false; logLine(frame); }
    } else if (frame.type === "run") {
      showRun(Object.assign({}, state.run || {}, frame));
      if (TERMINAL[frame.status]) refresh(); // the stored steps and outcome, then finish()
    }
  }
  var redrawTimer = null;
  function scheduleRedraw() {
    if (redrawTimer) return;
    redrawTimer = setTimeout(function () { redrawTimer = null; redrawAll(); }, 150);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var url = scheme + location.host + config.ws + (state.cursor != null ? "?after=" + encodeURIComponent(state.cursor) : "");
    var opened = false, frames = 0;
    var socket;
    try { socket = new WebSocket(url); } catch (e) { poll(); return; }
    state.socket = socket;
    socket.onopen = function () { opened = true; setLive("live"); watchEnd(); };
    socket.onmessage = function (event) {
      frames += 1;
      try { applyFrame(JSON.parse(event.data)); } catch (e) { /* a frame we cannot read */ }
    };
    socket.onclose = function () {
      state.socket = null;
      if (state.run && TERMINAL[state.run.status]) return;
      // No live socket on this server (or it went away): read the steps endpoint instead.
      if (!opened || frames === 0) poll();
      else setTimeout(connect, 1000);
    };
  }

  function watchEnd() {
    // A safety net beside the socket: a run that ended while no frame said so is still seen.
    if (state.endTimer) return;
    state.endTimer = setInterval(function () {
      if (!state.socket) { clearInterval(state.endTimer); state.endTimer = null; return; }
      api("").then(function (r) {
        if (r.ok && r.data && TERMINAL[r.data.status]) refresh();
      });
    }, 5000);
  }

  function poll() {
    setLive("polling");
    if (state.pollTimer) return;
    state.pollTimer = setInterval(refresh, 1500);
  }

  function refresh() {
    return Promise.all([api(""), api("steps/")]).then(function (rs) {
      if (rs[0].ok) showRun(rs[0].data);
      if (rs[1].ok) {
        (rs[1].data.results || []).forEach(function (s) {
          state.steps[s.seq] = Object.assign(state.steps[s.seq] || {}, s);
        });
      }
      redrawAll();
      if (state.run && TERMINAL[state.run.status]) finish();
    });
  }

  function finish() {
    if (state.finished) return;
    state.finished = true;
    if (state.pollTimer) { clearInterval(state.pollTimer); state.pollTimer = null; }
    if (state.endTimer) { clearInterval(state.endTimer); state.endTimer = null; }
    if (state.socket) { state.socket.close(); state.socket = null; }
    setLive("finished");
    if (state.selected != null && state.steps[state.selected]) showStep(state.steps[state.selected]);
    if (state.logsAvailable) loadLogs();
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof mermaid !== "undefined") {
      var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
      var theme = document.documentElement.dataset.theme;
      if (theme === "dark" || theme === "light") dark = theme === "dark";
      mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: dark ? "dark" : "neutral" });
    }
    $("replay-step").addEventListener("click", function () { replay({ step: state.selected }); });
    $("replay-from").addEventListener("click", function () { replay({ from_step: state.selected }); });
    probeOptional().then(refresh).then(function () {
      if (state.run && !TERMINAL[state.run.status]) connect();
      else setLive("finished");
    });
  });
})();
