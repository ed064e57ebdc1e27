/* Keyboard shortcuts and live feedback for the task pages. The forms work without this file. */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  function submitForm(form) {
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  }

  function setupCounters() {
    document.querySelectorAll("textarea[data-counter]").forEach(function (area) {
      var out = document.getElementById(area.dataset.counter);
      if (!out) return;
      var update = function () { out.textContent = String(area.value.length); };
      area.addEventListener("input", update);
      update();
    });
  }

  /* Ranking: a digit 1..K on a focused rank box sets it and moves to the next response. */
  function setupRanking(form) {
    var k = parseInt(form.dataset.k, 10);
    var selects = Array.prototype.slice.call(form.querySelectorAll("select[name^='rank_']"));
    var summary = document.getElementById("rank-summary");

    function update() {
      var groups = {};
      var missing = [];
      selects.forEach(function (s) {
        var card = s.closest(".candidate");
        if (card) card.dataset.rank = s.value;
        if (s.value) (groups[s.value] = groups[s.value] || []).push(s.dataset.letter);
        else missing.push(s.dataset.letter);
      });
      var order = Object.keys(groups).map(Number).sort(function (a, b) { return a - b; })
        .map(function (r) { return groups[r].join(" = "); });
      var text = order.length ? "Your ranking: " + order.join("  >  ") : "No ranks yet.";
      if (missing.length) text += "   (to rank: " + missing.join(", ") + ")";
      if (summary) summary.textContent = text;
    }

    selects.forEach(function (s, idx) {
      s.addEventListener("change", update);
      s.addEventListener("keydown", function (e) {
        if (e.ctrlKey || e.metaKey || e.altKey) return;
        var n = parseInt(e.key, 10);
        if (n >= 1 && n <= k) {
          e.preventDefault();
          s.value = String(n);
          update();
          var next = selects[idx + 1] || form.querySelector("button[type=submit]");
          if (next) next.focus();
        } else if (e.key === "Backspace" || e.key === "Delete" || e.key === "0") {
          e.preventDefault();
          s.value = "";
          update();
        }
      });
    });
    update();
  }

  /* Rating: digits 1..7 choose the Likert score unless typing in a text field. */
  function setupRating(form) {
    document.addEventListener("keydown", function (e) {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      var t = e.target;
      if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
      var n = parseInt(e.key, 10);
      if (n >= 1 && n <= 7) {
        var radio = form.querySelector("input[name=likert][value='" + n + "']");
        if (radio && !radio.disabled) {
          e.preventDefault();
          radio.checked = true;
          radio.focus();
        }
      }
    });
  }

  ready(function () {
    setupCounters();
    var form = document.querySelector("form.task-form");
    if (!form) return;
    form.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submitForm(form); }
    });
    if (form.classList.contains("ranking")) setupRanking(form);
    if (form.classList.contains("rating")) setupRating(form);
  });
})();
