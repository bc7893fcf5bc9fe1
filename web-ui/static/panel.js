// Kumo control panel: a little progressive enhancement. Every form works without it.
(function () {
  "use strict";

  // Ask before destructive actions.
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute && ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      if (r.redirected || r.status === 401) { window.location = "/ui/login?expired=1"; throw new Error("logged out"); }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }

  // Messages in the page's language (states, price line), from <body data-i18n>.
  var i18n = {};
  try { i18n = JSON.parse(document.body.getAttribute("data-i18n") || "{}"); } catch (e) { i18n = {}; }
  function stateName(state) { return (i18n.states && i18n.states[state]) || state; }
  function fill(msg, vals) {
    return msg.replace(/\{(\w+)\}/g, function (m, k) { return k in vals ? String(vals[k]) : m; });
  }

  function setState(el, state, reason) {
    if (el.getAttribute("data-state") !== state) {
      el.setAttribute("data-state", state);
      el.textContent = stateName(state);
      el.className = "state state-" + state;
    }
    el.title = reason || "";
  }

  // Instance list: refresh the state cells.
  var list = document.querySelector("[data-live-list]");
  if (list) {
    setInterval(function () {
      getJSON("/ui/instances.json").then(function (data) {
        data.items.forEach(function (i) {
          var el = list.querySelector('[data-state-of="' + i.id + '"]');
          if (el) setState(el, i.state, i.reason);
        });
      }).catch(function () {});
    }, 2000);
  }

  // Instance page: refresh state, reason, host and console.
  var inst = document.querySelector("[data-live-instance]");
  if (inst) {
    var id = inst.getAttribute("data-live-instance");
    setInterval(function () {
      getJSON("/ui/instances/" + encodeURIComponent(id) + "/live.json").then(function (d) {
        setState(document.getElementById("state"), d.state, d.reason);
        document.getElementById("reason").textContent = d.reason || "";
        document.getElementById("host").textContent = d.host || "—";
        var con = document.getElementById("console");
        if (con && con.textContent !== d.console) {
          var atEnd = con.scrollTop + con.clientHeight >= con.scrollHeight - 4;
          con.textContent = d.console;
          if (atEnd) con.scrollTop = con.scrollHeight;
        }
      }).catch(function () {});
    }, 2000);
  }

  // Instance page: redraw the graphs (server-drawn SVG) every 15 s and on a range switch.
  var graphs = document.getElementById("graphs");
  if (graphs) {
    var of = graphs.getAttribute("data-graphs-of");
    var redraw = function () {
      var range = graphs.getAttribute("data-range");
      fetch("/ui/instances/" + encodeURIComponent(of) + "/graphs?range=" + encodeURIComponent(range), { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
        .then(function (html) { graphs.innerHTML = html; })
        .catch(function () {});
    };
    document.querySelectorAll("[data-range]").forEach(function (a) {
      if (a === graphs) return;
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        graphs.setAttribute("data-range", a.getAttribute("data-range"));
        document.querySelectorAll(".ranges a").forEach(function (b) { b.className = b === a ? "active" : ""; });
        redraw();
      });
    });
    setInterval(redraw, 15000);
  }

  // Launch form: price of the chosen flavor from the billing API.
  var flavor = document.getElementById("flavor");
  var out = document.getElementById("estimate");
  if (flavor && out) {
    var show = function () {
      var f = flavor.value;
      if (!f) return;
      Promise.all([
        getJSON("/ui/estimate.json?hours=1&flavor=" + encodeURIComponent(f)),
        getJSON("/ui/estimate.json?hours=720&flavor=" + encodeURIComponent(f)),
      ]).then(function (r) {
        out.textContent = fill(i18n.price || "Price: {amount} {currency} per hour, {total} {currency} for 30 days (caps and tax included).",
          { amount: r[0].amount, currency: r[0].currency, total: r[1].total });
      }).catch(function (e) { out.textContent = fill(i18n.price_na || "Price: not available ({detail}).", { detail: e.message }); });
    };
    flavor.addEventListener("change", show);
    show();
  }
})();
