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
})();
