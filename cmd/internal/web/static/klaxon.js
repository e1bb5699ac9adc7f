// klaxon web view: keeps the incident list and the incident page current.
// Plain DOM, no framework; text is set with textContent only.
"use strict";
(function () {
  var body = document.body;

  function ago(now, iso) {
    var t = Date.parse(iso);
    if (isNaN(t) || t <= 0) return "";
    var s = Math.floor((now - t) / 1000);
    if (s < 0) return "in " + (-s) + "s";
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 172800) return Math.floor(s / 3600) + "h ago";
    return Math.floor(s / 86400) + "d ago";
  }
  function stamp(iso) { return iso.replace("T", " ").slice(0, 19) + "Z"; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function timeCell(now, iso) {
    var td = el("td"), t = el("time", "", ago(now, iso));
    t.dateTime = iso; t.title = stamp(iso);
    td.appendChild(t);
    return td;
  }
  function labelled(td, label) { td.dataset.label = label; return td; }
  function stamp2(iso) { return iso ? stamp(iso) : ""; }
  // The status on-call reads: firing until resolved ("updated" is a change).
  function shown(inc) { return inc.display_status || (inc.status === "resolved" ? "resolved" : "firing"); }
  function row(now, inc) {
    var tr = el("tr");
    tr.dataset.id = inc.id;
    var badges = el("td", "badges"), st = shown(inc);
    badges.appendChild(el("span", "sev sev-" + inc.severity, inc.severity));
    badges.appendChild(document.createTextNode(" "));
    badges.appendChild(el("span", "status status-" + st, st));
    if (inc.silenced_by) {
      var s = inc.silenced_by, b = el("span", "badge silenced", "silenced");
      b.title = "silenced until " + stamp2(s.ends_at) + " by " + s.created_by + ": " + s.comment + " (" + s.matchers + ")";
      badges.appendChild(document.createTextNode(" "));
      badges.appendChild(b);
      tr.className = "is-silenced";
    }
    tr.appendChild(badges);
    var title = el("td", "title"), a = el("a", "", inc.title);
    a.href = "/incidents/" + encodeURIComponent(inc.id);
    title.appendChild(a); title.appendChild(el("div", "rule", inc.rule)); tr.appendChild(title);
    tr.appendChild(labelled(el("td", "", inc.node), "node"));
    tr.appendChild(labelled(el("td", "num", String(inc.count)), "count"));
    tr.appendChild(labelled(timeCell(now, inc.started_at), "started"));
    tr.appendChild(labelled(timeCell(now, inc.updated_at), "updated"));
    return tr;
  }
  function inhibitedRow(now, g) {
    var tr = el("tr", "is-inhibited");
    tr.dataset.id = g.id;
    var badges = el("td", "badges");
    badges.appendChild(el("span", "sev sev-" + g.severity, g.severity));
    badges.appendChild(document.createTextNode(" "));
    badges.appendChild(el("span", "badge inhibited", "inhibited"));
    tr.appendChild(badges);
    var title = el("td", "title", g.title); title.appendChild(el("div", "rule", g.rule)); tr.appendChild(title);
    tr.appendChild(labelled(el("td", "", g.node), "node"));
    var by = labelled(el("td"), "held back by");
    (g.inhibited_by || []).forEach(function (r, i) {
      if (i) by.appendChild(document.createTextNode(", "));
      by.appendChild(el("code", "", r));
    });
    tr.appendChild(by);
    tr.appendChild(labelled(el("td", "num", String(g.count)), "count"));
    tr.appendChild(labelled(timeCell(now, g.last), "last"));
    return tr;
  }
  function fillInhibited(list, now) {
    var sec = document.getElementById("inhibited-section"), tbody = document.querySelector("#inhibited tbody");
    if (!sec || !tbody) return;
    var rows = document.createDocumentFragment();
    list.forEach(function (g) { rows.appendChild(inhibitedRow(now, g)); });
    tbody.replaceChildren(rows);
    document.getElementById("inhibited-count").textContent = String(list.length);
    sec.hidden = list.length === 0;
  }
  function fill(name, list, now) {
    var tbody = document.querySelector("#" + name + " tbody");
    if (!tbody) return;
    var rows = document.createDocumentFragment();
    list.forEach(function (inc) { rows.appendChild(row(now, inc)); });
    tbody.replaceChildren(rows);
    document.getElementById(name + "-count").textContent = String(list.length);
    document.getElementById(name + "-empty").hidden = list.length > 0;
  }
  function state(text, ok) {
    var s = document.getElementById("live-state");
    if (s) s.textContent = text;
    body.dataset.live = ok ? "ok" : "error";
  }

  function pollIncidents() {
    fetch("/api/incidents", { cache: "no-cache" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (d) {
        var now = Date.parse(d.now) || Date.now();
        fill("open", d.open || [], now);
        fill("resolved", d.resolved || [], now);
        fillInhibited(d.inhibited || [], now);
        document.title = (d.open && d.open.length ? "(" + d.open.length + ") " : "") + "Incidents · klaxon";
        state("updated " + new Date().toLocaleTimeString(), true);
      })
      .catch(function (e) { state("not updating: " + e.message, false); })
      .finally(function () { setTimeout(pollIncidents, 3000); });
  }

  function pollIncident(id) {
    var sec = document.querySelector("section.incident");
    fetch("/api/incidents/" + encodeURIComponent(id), { cache: "no-cache" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (inc) {
        if (inc && sec && (String(inc.seq) !== sec.dataset.seq || inc.status !== sec.dataset.status ||
            String(inc.count) !== sec.dataset.count || Math.floor(Date.parse(inc.started_at) / 1000) !== Math.floor(Date.parse(sec.dataset.started) / 1000))) {
          location.reload();
          return;
        }
        body.dataset.live = "ok";
        setTimeout(function () { pollIncident(id); }, 5000);
      })
      .catch(function () { setTimeout(function () { pollIncident(id); }, 5000); });
  }

  if (body.dataset.page === "incidents" && document.getElementById("open")) {
    pollIncidents();
  } else if (body.dataset.incident) {
    setTimeout(function () { pollIncident(body.dataset.incident); }, 5000);
  }
})();
