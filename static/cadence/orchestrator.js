// The orchestrator page: the flow drawn by the vendored mermaid, the flow's JSON checked as it is
// typed (the server checks it in full on save and places each error at its path), and the try-it
// box's text carried into its own form.
(function () {
  "use strict";
  function drawDiagrams() {
    if (typeof mermaid === "undefined" || !document.querySelector(".mermaid")) return;
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    var theme = document.documentElement.dataset.theme;
    if (theme === "dark" || theme === "light") dark = theme === "dark";
    mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: dark ? "dark" : "neutral" });
    mermaid.run({ querySelector: ".mermaid" }).then(function () {
      document.querySelectorAll(".cadence-diagram").forEach(function (d) { d.dataset.drawn = "1"; });
    });
  }
  function checkJson(area) {
    var list = area.parentNode.querySelector(".cadence-json-errors");
    if (!list) {
      list = document.createElement("ul");
      list.className = "cadence-json-errors";
      list.setAttribute("aria-live", "polite");
      area.insertAdjacentElement("afterend", list);
    }
    list.textContent = "";
    if (!area.value.trim()) return;
    try {
      JSON.parse(area.value);
    } catch (e) {
      var item = document.createElement("li");
      item.textContent = "Not valid JSON: " + e.message;
      list.appendChild(item);
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    drawDiagrams();
    document.querySelectorAll("textarea.cadence-json").forEach(function (area) {
      area.addEventListener("input", function () { checkJson(area); });
      area.addEventListener("keydown", function (e) {
        if (e.key === "Tab" && !e.shiftKey) {
          e.preventDefault();
          area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
        }
      });
    });
    var tryForm = document.getElementById("try-form");
    if (tryForm) {
      tryForm.addEventListener("submit", function () {
        tryForm.elements.message.value = document.querySelector("[name=try_message]").value;
      });
    }
  });
})();
