/* invoice-gateway admin: small enhancements; every page also works without script. */
(function () {
  "use strict";

  function token() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }

  function toast(text, bad) {
    var t = document.getElementById("toast");
    if (!t) { return; }
    t.textContent = text;
    t.className = "toast" + (bad ? " bad" : "");
    t.hidden = false;
    clearTimeout(t.hideTimer);
    t.hideTimer = setTimeout(function () { t.hidden = true; }, 5000);
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // Wait until a background run (export run now, mailbox fetch now) has finished.
  async function waitDone(url) {
    for (var i = 0; i < 60; i++) {
      await sleep(500);
      try {
        var r = await fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
        if (!r.ok) { return; }
        var j = await r.json();
        if (!j.running && !j.fetching) { return; }
      } catch (e) { return; }
    }
  }

  document.addEventListener("submit", async function (ev) {
    var form = ev.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { ev.preventDefault(); return; }
    var api = form.getAttribute("data-api");
    if (!api || !window.fetch) { return; }
    ev.preventDefault();
    var button = form.querySelector("button");
    if (button) { button.disabled = true; button.classList.add("busy"); }
    try {
      var r = await fetch(api, {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": token(), "Accept": "application/json" }
      });
      var body = {};
      try { body = await r.json(); } catch (e) { body = {}; }
      if (!r.ok) {
        toast(body.error || ("Failed: HTTP " + r.status), true);
        if (button) { button.disabled = false; button.classList.remove("busy"); }
        return;
      }
      if (body.running) {
        toast("Started…");
        await waitDone(api.replace(/\/(run|fetch)$/, ""));
      }
      window.location.reload();
    } catch (e) {
      toast("Network error: " + e, true);
      if (button) { button.disabled = false; button.classList.remove("busy"); }
    }
  });

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("[data-copy]") : null;
    if (!b) { return; }
    var el = document.getElementById(b.getAttribute("data-copy"));
    if (!el) { return; }
    var text = el.textContent;
    function fallback() {
      var range = document.createRange();
      range.selectNodeContents(el);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      toast(ok ? "Copied" : "Selected: press Ctrl+C (or Cmd+C) to copy");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { toast("Copied"); }, fallback);
    } else {
      fallback();
    }
  });
  // The document page: pick a field's value on the preview. Click in a field, then click a word on the
  // page (shift-click adds the next word); the form is saved as when typing.
  function asAmount(text) {
    var t = text.replace(/[^0-9.,\-]/g, "");
    var m = /^(-?[0-9.,]*?)[.,]([0-9]{1,2})$/.exec(t);
    return m ? m[1].replace(/[.,]/g, "") + "." + (m[2].length === 1 ? m[2] + "0" : m[2]) : t.replace(/[.,]/g, "");
  }

  function asDate(text) {
    var m = /^([0-9]{1,2})[./]([0-9]{1,2})[./]([0-9]{4})$/.exec(text.replace(/[,;]$/, ""));
    if (!m) { return text; }
    return m[3] + "-" + ("0" + m[2]).slice(-2) + "-" + ("0" + m[1]).slice(-2);
  }

  function picked(input, words) {
    var text = words.join(" ");
    var kind = input.getAttribute("data-kind");
    if (kind === "amount") { return asAmount(text); }
    if (kind === "date") { return asDate(text); }
    return text.replace(/^[:;,]+|[:;,]+$/g, "");
  }

  async function wordsOverPreview(view, form) {
    var layer = view.querySelector(".words");
    var r = await fetch(view.getAttribute("data-words"), { headers: { "Accept": "application/json" },
                                                           credentials: "same-origin" });
    if (!r.ok) { return; }
    var page = await r.json();
    if (!page.width || !page.height || !page.words.length) { return; }
    page.words.forEach(function (w) {
      var span = document.createElement("span");
      span.className = "word";
      span.textContent = w.text;
      span.style.left = (100 * w.box[0] / page.width) + "%";
      span.style.top = (100 * w.box[1] / page.height) + "%";
      span.style.width = (100 * (w.box[2] - w.box[0]) / page.width) + "%";
      span.style.height = (100 * (w.box[3] - w.box[1]) / page.height) + "%";
      layer.appendChild(span);
    });
    layer.hidden = false;
    var hint = form.querySelector(".pick-hint");
    if (hint) { hint.hidden = false; }
    var active = null;
    var chosen = [];
    form.addEventListener("focusin", function (ev) {
      var input = ev.target;
      if (input.tagName !== "INPUT" || !input.id || input.id.indexOf("field-") !== 0) { return; }
      if (active !== input) { chosen = []; }
      active = input;
      view.classList.add("picking");
      view.querySelectorAll("rect.hl").forEach(function (rect) {
        rect.classList.toggle("current", rect.getAttribute("data-field") === input.name);
      });
    });
    form.addEventListener("focusout", function (ev) {
      if (ev.relatedTarget && form.contains(ev.relatedTarget)) { return; }
      view.classList.remove("picking");
    });
    layer.addEventListener("mousedown", function (ev) {
      if (ev.target.classList.contains("word")) { ev.preventDefault(); }  // the field keeps the focus
    });
    layer.addEventListener("click", function (ev) {
      var span = ev.target;
      if (!active || !span.classList.contains("word")) { return; }
      ev.preventDefault();
      chosen = ev.shiftKey ? chosen.concat([span.textContent]) : [span.textContent];
      active.value = picked(active, chosen);
      active.dispatchEvent(new Event("input", { bubbles: true }));
      layer.querySelectorAll(".word.chosen").forEach(function (w) {
        if (!ev.shiftKey) { w.classList.remove("chosen"); }
      });
      span.classList.add("chosen");
      active.focus();
    });
  }

  var view = document.getElementById("page-view");
  var fieldsForm = document.querySelector(".fields-form");
  if (view && fieldsForm && window.fetch) {
    wordsOverPreview(view, fieldsForm).catch(function () { /* typing still works */ });
  }
})();
