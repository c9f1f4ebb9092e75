// Murder live dashboard: polls dashboard.json once a second, no external code.
// "/" lists every swarm; "/swarm?info_hash=HEX" shows one swarm host by host.
(function () {
  'use strict';
  var POLL_MS = 1000;
  var MAX_ROWS = 500;  // table rows drawn at once (the grid always shows every host)
  var ORDER = { stalled: 0, downloading: 1, gone: 2, complete: 3, seeder: 4 };
  var STATES = ['complete', 'downloading', 'stalled', 'gone', 'seeder'];
  var params = new URLSearchParams(location.search);
  var swarmHash = /\/swarm$/.test(location.pathname) ? params.get('info_hash') : null;
  var app = document.getElementById('app');
  var live = document.getElementById('live');
  var showAll = false;
  var lastDoc = null;
  var gridPeers = [];

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function bytes(n) {
    if (n == null) return '–';
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + ' ' + units[i];
  }
  function dur(s) {
    if (s == null) return '–';
    if (s > 0 && s < 10 && s % 1) return s.toFixed(1) + ' s';
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' m ' + ('0' + s % 60).slice(-2) + ' s';
    return Math.floor(s / 3600) + ' h ' + ('0' + Math.floor(s % 3600 / 60)).slice(-2) + ' m';
  }
  function pct(p) { return p == null ? '?' : (100 * p).toFixed(1) + ' %'; }
  function fact(label, value, alert) {
    return '<div class="fact' + (alert ? ' alert' : '') + '"><b>' + value + '</b><span>' +
      label + '</span></div>';
  }

  function summary(s, link) {
    var st = s.states, total = 0;
    STATES.forEach(function (k) { total += st[k]; });
    var done = st.complete, hosts = s.hosts;
    var title = s.name ? esc(s.name) : '(unnamed torrent)';
    if (link) title = '<a href="swarm?info_hash=' + s.info_hash + '">' + title + '</a>';
    var bar = STATES.map(function (k) {
      return st[k] ? '<div class="st-' + k + '" style="width:' + (100 * st[k] / total) +
        '%" title="' + k + ': ' + st[k] + '"></div>' : '';
    }).join('');
    return '<h2>' + title + ' <code>' + s.info_hash + '</code></h2>' +
      '<div class="facts">' +
      fact('hosts done', done + ' / ' + hosts) +
      fact('downloading', st.downloading) +
      fact('stalled', st.stalled, st.stalled > 0) +
      fact('gone', st.gone, st.gone > 0) +
      fact('rate', bytes(s.rate) + '/s') +
      fact('left', bytes(s.left)) +
      fact('eta', st.downloading || st.stalled ? dur(s.eta) : 'done') +
      fact('elapsed', dur(s.elapsed)) +
      fact('seeder sent ÷ payload', s.seeder_ratio == null ? '–' : s.seeder_ratio.toFixed(2) + '×') +
      fact('payload', bytes(s.size) + (s.size_estimated ? '*' : '')) +
      '</div><div class="bar">' + bar + '</div>' +
      '<div class="legend">' + STATES.map(function (k) {
        return '<i class="st-' + k + '"></i>' + k + ' ' + st[k];
      }).join('') + (s.size_estimated ? ' · * size estimated from peers' : '') + '</div>';
  }

  // Completion-time CDF: hosts done over time since the first host appeared;
  // red crosses mark hosts that left unfinished.
  function cdf(s, height) {
    var W = 600, H = height, L = 34, B = 18, T = 6, R = 8;
    var xs = s.completions, fails = s.failures, n = Math.max(1, s.hosts);
    var tmax = Math.max(1, s.elapsed, xs.length ? xs[xs.length - 1] : 0);
    function X(t) { return L + (W - L - R) * t / tmax; }
    function Y(k) { return H - B - (H - B - T) * k / n; }
    var d = 'M' + X(0) + ',' + Y(0);
    xs.forEach(function (t, i) { d += 'H' + X(t).toFixed(1) + 'V' + Y(i + 1).toFixed(1); });
    d += 'H' + X(Math.max(s.elapsed, 0)).toFixed(1);
    var out = '<svg class="cdf" viewBox="0 0 ' + W + ' ' + H + '" preserveAspectRatio="none">';
    [0, 0.25, 0.5, 0.75, 1].forEach(function (f) {
      var y = Y(f * n);
      out += '<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y + '" y2="' + y +
        '" stroke="#eee"/><text x="2" y="' + (y + 3) + '">' + Math.round(f * 100) + '%</text>';
    });
    for (var i = 0; i <= 4; i++) {
      var t = tmax * i / 4;
      out += '<text x="' + (X(t) - 8) + '" y="' + (H - 4) + '">' + dur(t) + '</text>';
    }
    out += '<path d="' + d + '" fill="none" stroke="#2e9d4b" stroke-width="2"/>';
    fails.forEach(function (t) {
      var x = X(Math.min(t, tmax)), y = H - B - 6;
      out += '<path d="M' + (x - 4) + ',' + (y - 4) + 'l8,8m0,-8l-8,8" stroke="#d62f2f" ' +
        'stroke-width="2"><title>gone at ' + dur(t) + '</title></path>';
    });
    return out + '</svg>';
  }

  // Every host as one cell, in address order: scannable at 2,000 hosts.
  function drawGrid(canvas, peers, cols) {
    var n = peers.length, width = canvas.parentNode.clientWidth || 600;
    var cell = Math.max(6, Math.min(22, Math.floor(Math.sqrt(width * 320 / Math.max(1, n)))));
    var per = Math.max(1, Math.floor(width / cell)), rows = Math.ceil(n / per);
    var ratio = window.devicePixelRatio || 1;
    canvas.width = per * cell * ratio; canvas.height = Math.max(1, rows * cell) * ratio;
    canvas.style.width = per * cell + 'px'; canvas.style.height = rows * cell + 'px';
    var g = canvas.getContext('2d');
    g.scale(ratio, ratio);
    var css = getComputedStyle(document.documentElement);
    var color = {};
    STATES.forEach(function (k) {
      color[k] = css.getPropertyValue(k === 'downloading' ? '--dl' : '--' + k).trim();
    });
    var pi = cols.indexOf('progress'), si = cols.indexOf('state');
    peers.forEach(function (p, i) {
      var x = (i % per) * cell, y = Math.floor(i / per) * cell, c = cell - 1;
      var state = p[si];
      if (state === 'downloading') {
        g.fillStyle = '#cfdcf3'; g.fillRect(x, y, c, c);
        var h = Math.round(c * (p[pi] || 0));
        g.fillStyle = color.downloading; g.fillRect(x, y + c - h, c, h);
      } else {
        g.fillStyle = color[state]; g.fillRect(x, y, c, c);
      }
      if (state === 'stalled') {
        g.strokeStyle = '#000'; g.lineWidth = 1.5; g.strokeRect(x + 1, y + 1, c - 2, c - 2);
      }
    });
    canvas.dataset.per = per; canvas.dataset.cell = cell;
  }

  function hover(ev) {
    var canvas = ev.target, cell = +canvas.dataset.cell, per = +canvas.dataset.per;
    var r = canvas.getBoundingClientRect();
    var i = Math.floor((ev.clientY - r.top) / cell) * per + Math.floor((ev.clientX - r.left) / cell);
    var info = document.getElementById('hoverinfo'), p = gridPeers[i];
    if (!info) return;
    info.textContent = p ? p[0] + ':' + p[1] + ' — ' + p[2] + ', ' + pct(p[3]) +
      ', ' + bytes(p[4]) + '/s' : '';
  }

  function table(s) {
    var c = {}; s.columns.forEach(function (k, i) { c[k] = i; });
    var rows = s.peers.slice().sort(function (a, b) {
      return ORDER[a[c.state]] - ORDER[b[c.state]] || (a[c.progress] || 0) - (b[c.progress] || 0);
    });
    var shown = showAll ? rows : rows.slice(0, MAX_ROWS);
    var out = '<table class="peers"><thead><tr><th>host</th><th>state</th><th>progress</th>' +
      '<th>rate</th><th>eta</th><th>left</th><th>uploaded</th><th>downloaded</th>' +
      '<th>done at</th><th>no progress for</th><th>last announce</th></tr></thead><tbody>';
    shown.forEach(function (p) {
      var st = p[c.state], prog = p[c.progress];
      var barColor = st === 'downloading' ? 'st-downloading' : 'st-' + st;
      out += '<tr class="' + st + '" data-host="' + esc(p[c.ip] + ':' + p[c.port]) + '">' +
        '<td>' + esc(p[c.ip]) + ':' + p[c.port] + '</td><td class="state">' + st + '</td>' +
        '<td class="pct"><span class="pbar"><div class="' + barColor + '" style="width:' +
        (100 * (prog || 0)) + '%"></div></span>' + pct(prog) + '</td>' +
        '<td class="num">' + (st === 'downloading' ? bytes(p[c.rate]) + '/s' : '–') +
        '</td><td class="num">' + dur(p[c.eta]) + '</td><td class="num">' + bytes(p[c.left]) + '</td><td class="num">' +
        bytes(p[c.uploaded]) + '</td><td class="num">' + bytes(p[c.downloaded]) + '</td>' +
        '<td class="num">' + (p[c.done_at] == null ? '–' : dur(p[c.done_at])) + '</td>' +
        '<td class="num">' + (st === 'downloading' || st === 'stalled' ? dur(p[c.idle]) : '–') +
        '</td><td class="num">' + dur(p[c.age]) + ' ago</td></tr>';
    });
    out += '</tbody></table>';
    if (rows.length > shown.length) {
      out += '<p class="note">' + (rows.length - shown.length) + ' more hosts (finished ones ' +
        'last) <button id="showall">show all</button></p>';
    }
    return out;
  }

  function render(doc) {
    lastDoc = doc;
    if (swarmHash) {
      var s = doc.swarms[0];
      if (!s) { app.innerHTML = '<p class="note">No such swarm (yet).</p>'; return; }
      document.getElementById('title').textContent = s.name || s.info_hash;
      app.innerHTML = '<section class="card">' + summary(s, false) + '</section>' +
        '<section class="card row2"><div><h2>Hosts</h2><canvas class="grid" id="grid">' +
        '</canvas><div class="hoverinfo" id="hoverinfo"></div></div><div><h2>Completion ' +
        'over time</h2>' + cdf(s, 220) + '</div></section>' +
        '<section class="card"><h2>Peers</h2>' + table(s) + '</section>';
      gridPeers = s.peers;
      var canvas = document.getElementById('grid');
      drawGrid(canvas, s.peers, s.columns);
      canvas.addEventListener('mousemove', hover);
      var more = document.getElementById('showall');
      if (more) more.addEventListener('click', function () { showAll = true; render(lastDoc); });
    } else {
      app.innerHTML = doc.swarms.length ? doc.swarms.map(function (s) {
        return '<section class="card">' + summary(s, true) + cdf(s, 120) + '</section>';
      }).join('') : '<p class="note">No swarm yet: peers appear here when they announce.</p>';
    }
  }

  function poll() {
    var url = 'dashboard.json' + (swarmHash ? '?info_hash=' + encodeURIComponent(swarmHash) : '');
    fetch(url, { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (doc) {
      render(doc);
      live.textContent = 'live · ' + new Date(doc.now * 1000).toLocaleTimeString();
      live.className = 'live';
    }).catch(function (e) {
      live.textContent = 'tracker unreachable (' + e.message + ')';
      live.className = 'live stale';
    }).then(function () { setTimeout(poll, POLL_MS); });
  }
  poll();
})();
