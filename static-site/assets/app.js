// lab-stack page script. Polls the student API, renders the students, shows which replica
// answered (a stable colour per replica, a bar of the last polls), adds students through the
// form and then shows which replicas can read the new one. No dependencies, no inline script:
// the server passes its settings in data- attributes on <body>.
(function () {
  'use strict';

  /** Poll period when the page does not say otherwise (the lab's contract: every 2 s). */
  var DEFAULT_INTERVAL_MS = 2000;
  /** A poll that takes longer than this is abandoned (and the next one follows at once). */
  var REQUEST_TIMEOUT_MS = 5000;
  /** Entries kept in the "recent polls" list. */
  var HISTORY_LENGTH = 10;
  /** Polls the distribution bar covers. */
  var WINDOW_LENGTH = 30;
  /** Entries kept in the hidden poll log (start/end times, read by the browser tests). */
  var LOG_LENGTH = 20;
  /** Lookups of a new student by id, at least (more when more replicas are in the bar). */
  var MIN_LOOKUPS = 6;
  var UNAVAILABLE = 'API unavailable \u2014 retrying\u2026';

  var data = document.body.dataset;
  var api = data.api || '/api/student';
  var intervalMs = Number(data.intervalMs) || DEFAULT_INTERVAL_MS;
  var count = Number(data.count) || 5;

  var tbody = document.querySelector('#students tbody');
  var apiInstance = document.getElementById('api-instance');
  var apiUpstream = document.getElementById('api-upstream');
  var pollStatus = document.getElementById('poll-status');
  var history = document.getElementById('poll-history');
  var pollLog = document.getElementById('poll-log');
  var bar = document.getElementById('distribution');
  var barSummary = document.getElementById('distribution-summary');
  var legend = document.getElementById('replica-legend');
  var form = document.getElementById('student-form');
  var formStatus = document.getElementById('form-status');
  var submit = document.getElementById('student-submit');
  var seenBy = document.getElementById('seen-by');
  var seenBySummary = document.getElementById('seen-by-summary');
  var seenByList = document.getElementById('seen-by-list');

  function clock() {
    return new Date().toLocaleTimeString();
  }

  function setStatus(el, state, text) {
    el.dataset.state = state;
    el.textContent = text;
  }

  // --- colours -------------------------------------------------------------------------------

  // FNV-1a over the name: the same replica gets the same hue on every page and every browser.
  function hash(name) {
    var h = 0x811c9dc5;
    for (var i = 0; i < name.length; i++) {
      h ^= name.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h;
  }

  function hslToRgb(h, s, l) {
    var a = s * Math.min(l, 1 - l);
    function f(n) {
      var k = (n + h / 30) % 12;
      return l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    }
    return [f(0), f(8), f(4)];
  }

  function luminance(rgb) {
    var c = rgb.map(function (v) {
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }

  var colours = {};
  // A hue from the name, then the lightest shade that still gives white text a contrast of at
  // least 4.5:1 (WCAG AA), so chips stay readable whatever the hue.
  function colourFor(name) {
    if (colours[name]) {
      return colours[name];
    }
    var hue = hash(name) % 360;
    var light = 0.5;
    while (light > 0.1 && 1.05 / (luminance(hslToRgb(hue, 0.7, light)) + 0.05) < 4.5) {
      light -= 0.02;
    }
    colours[name] = 'hsl(' + hue + ', 70%, ' + Math.round(light * 100) + '%)';
    return colours[name];
  }

  // A coloured label for a replica; colours are set through the CSSOM, which the page's CSP
  // allows (inline style attributes it would not).
  function chip(name) {
    var span = document.createElement('span');
    span.className = 'chip';
    span.textContent = name;
    if (name) {
      span.dataset.colour = colourFor(name);
      span.style.backgroundColor = span.dataset.colour;
    } else {
      span.className = 'chip chip-failed';
      span.textContent = 'failed';
    }
    return span;
  }

  // --- the students table ----------------------------------------------------------------------

  function cell(row, text) {
    var td = document.createElement('td');
    td.textContent = text == null ? '' : String(text);
    row.appendChild(td);
  }

  // textContent only: student fields come from other users' POSTs.
  function renderStudents(students) {
    var rows = document.createDocumentFragment();
    students.forEach(function (s) {
      var tr = document.createElement('tr');
      tr.dataset.id = s.id;
      cell(tr, s.firstName + ' ' + s.lastName);
      cell(tr, s.gender);
      cell(tr, s.birthday);
      cell(tr, s.email);
      cell(tr, s.city);
      rows.appendChild(tr);
    });
    tbody.replaceChildren(rows);
  }

  // --- who answered ----------------------------------------------------------------------------

  /** The last WINDOW_LENGTH polls: {seq, instance} (instance null for a failed poll). */
  var recent = [];
  var seq = 0;

  // A replica that has missed two rounds (two polls per replica in the bar, at least 4) is
  // taken out of the bar at once rather than when it scrolls out of the window: a killed
  // replica vanishes within seconds. A live one that was merely skipped comes back with its
  // next answer.
  function pruneGone() {
    var last = {};
    recent.forEach(function (p) {
      if (p.instance) {
        last[p.instance] = p.seq;
      }
    });
    var names = Object.keys(last);
    var limit = Math.max(4, 2 * names.length);
    var gone = names.filter(function (n) { return seq - last[n] > limit; });
    if (gone.length) {
      recent = recent.filter(function (p) { return gone.indexOf(p.instance) < 0; });
    }
  }

  function renderDistribution() {
    var counts = {};
    var order = [];
    recent.forEach(function (p) {
      var key = p.instance || '';
      if (!(key in counts)) {
        counts[key] = 0;
        order.push(key);
      }
      counts[key] += 1;
    });
    order.sort();
    var total = recent.length;
    var segments = document.createDocumentFragment();
    var items = document.createDocumentFragment();
    var words = [];
    order.forEach(function (name) {
      var share = Math.round((100 * counts[name]) / total);
      var label = (name || 'failed') + ': ' + counts[name] + ' of ' + total + ' (' + share + '%)';
      var seg = document.createElement('span');
      seg.className = name ? 'segment' : 'segment segment-failed';
      seg.dataset.instance = name;
      seg.title = label;
      seg.style.flexGrow = String(counts[name]);
      if (name) {
        seg.style.backgroundColor = colourFor(name);
      }
      segments.appendChild(seg);

      var li = document.createElement('li');
      li.dataset.instance = name;
      li.dataset.count = String(counts[name]);
      li.appendChild(chip(name));
      li.appendChild(document.createTextNode(' ' + counts[name] + ' (' + share + '%)'));
      items.appendChild(li);
      words.push(label);
    });
    bar.replaceChildren(segments);
    legend.replaceChildren(items);
    var replicas = order.filter(function (n) { return n; }).length;
    barSummary.textContent = total
      ? replicas + (replicas === 1 ? ' replica' : ' replicas') + ' in the last ' + total +
        (total === 1 ? ' poll: ' : ' polls: ') + words.join(', ') + '.'
      : 'No poll yet.';
  }

  function recordPoll(instance, upstream, ok, started, ended) {
    seq += 1;
    recent.push({ seq: seq, instance: ok ? instance : null });
    while (recent.length > WINDOW_LENGTH) {
      recent.shift();
    }
    pruneGone();
    renderDistribution();

    var li = document.createElement('li');
    li.dataset.instance = instance || '';
    li.dataset.ok = String(ok);
    li.appendChild(document.createTextNode(clock() + ' '));
    li.appendChild(chip(ok ? instance || '?' : null));
    if (ok && upstream) {
      li.appendChild(document.createTextNode(' via ' + upstream));
    }
    history.insertBefore(li, history.firstChild);
    while (history.children.length > HISTORY_LENGTH) {
      history.removeChild(history.lastChild);
    }

    // Start and end of each poll (ms since page load), oldest first, for the browser tests.
    var entry = document.createElement('li');
    entry.dataset.seq = String(seq);
    entry.dataset.start = started.toFixed(1);
    entry.dataset.end = ended.toFixed(1);
    entry.dataset.ok = String(ok);
    entry.dataset.instance = instance || '';
    pollLog.appendChild(entry);
    while (pollLog.children.length > LOG_LENGTH) {
      pollLog.removeChild(pollLog.firstChild);
    }
  }

  async function fetchStudents() {
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, REQUEST_TIMEOUT_MS);
    try {
      var res = await fetch(api + '?count=' + count, {
        cache: 'no-store',
        headers: { Accept: 'application/json' },
        signal: controller.signal
      });
      var instance = res.headers.get('X-Instance') || '?';
      var upstream = res.headers.get('X-Upstream') || '';
      if (!res.ok) {
        throw new Error('HTTP ' + res.status + ' from ' + instance);
      }
      var students = await res.json();
      if (!Array.isArray(students)) {
        throw new Error('expected an array');
      }
      return { instance: instance, upstream: upstream, students: students };
    } finally {
      clearTimeout(timer);
    }
  }

  // A setTimeout chain, not an interval timer: the next poll is scheduled only after this one has
  // finished, so two polls are never in flight, and it starts intervalMs after this one
  // started (less the time this one took), so the rhythm stays at one poll per interval.
  async function poll() {
    var started = performance.now();
    try {
      var result = await fetchStudents();
      renderStudents(result.students);
      apiInstance.replaceChildren(chip(result.instance));
      apiInstance.dataset.instance = result.instance;
      apiUpstream.textContent = result.upstream || '(not sent)';
      setStatus(pollStatus, 'ok', 'Updated at ' + clock() + ' by ' + result.instance + '.');
      recordPoll(result.instance, result.upstream, true, started, performance.now());
    } catch (err) {
      setStatus(pollStatus, 'error', UNAVAILABLE);
      recordPoll(null, null, false, started, performance.now());
    } finally {
      var elapsed = performance.now() - started;
      setTimeout(poll, Math.max(0, intervalMs - elapsed));
    }
  }

  // --- the form ------------------------------------------------------------------------------

  function clearFieldErrors() {
    form.querySelectorAll('[data-error-for]').forEach(function (el) {
      el.textContent = '';
    });
    form.querySelectorAll('[aria-invalid]').forEach(function (el) {
      el.removeAttribute('aria-invalid');
    });
  }

  // Shows each field's message next to it and focuses the first bad field in form order;
  // returns the messages for fields the form lacks.
  function showFieldErrors(fields) {
    var other = [];
    Object.keys(fields).forEach(function (name) {
      var slot = form.querySelector('[data-error-for="' + CSS.escape(name) + '"]');
      var input = form.elements.namedItem(name);
      if (slot) {
        slot.textContent = fields[name];
      } else {
        other.push(name + ' ' + fields[name]);
      }
      if (input && input.setAttribute) {
        input.setAttribute('aria-invalid', 'true');
      }
    });
    var first = form.querySelector('[aria-invalid="true"]');
    if (first) {
      first.focus();
    }
    return other;
  }

  // Asks for the new student by id several times; round-robin spreads the lookups over the
  // replicas, and each answer says whether that replica can read it from the shared roster.
  async function proveEveryReplicaSees(id) {
    var replicas = recent.filter(function (p) { return p.instance; })
      .map(function (p) { return p.instance; })
      .filter(function (n, i, all) { return all.indexOf(n) === i; }).length;
    var lookups = Math.max(MIN_LOOKUPS, 2 * replicas);
    var seen = {};
    var order = [];
    seenBy.dataset.state = 'checking';
    seenBySummary.textContent = 'Asking the replicas for student ' + id + '\u2026';
    seenByList.replaceChildren();
    for (var i = 0; i < lookups; i++) {
      try {
        var res = await fetch(api + '/' + encodeURIComponent(id), {
          cache: 'no-store',
          headers: { Accept: 'application/json' }
        });
        var instance = res.headers.get('X-Instance') || '?';
        if (!(instance in seen)) {
          order.push(instance);
          seen[instance] = res.status === 200;
        } else {
          seen[instance] = seen[instance] && res.status === 200;
        }
      } catch (err) {
        // A lookup that failed in transit says nothing about the roster: skip it.
      }
    }
    order.sort();
    var items = document.createDocumentFragment();
    var words = [];
    order.forEach(function (name) {
      var li = document.createElement('li');
      li.dataset.instance = name;
      li.dataset.found = String(seen[name]);
      li.appendChild(chip(name));
      li.appendChild(document.createTextNode(seen[name] ? ' \u2713 has it' : ' \u2717 not found'));
      items.appendChild(li);
      words.push(name + ' ' + (seen[name] ? '\u2713' : '\u2717'));
    });
    seenByList.replaceChildren(items);
    var all = order.length > 0 && order.every(function (n) { return seen[n]; });
    seenBy.dataset.state = 'done';
    seenBy.dataset.all = String(all);
    seenBySummary.textContent = order.length
      ? 'Seen by ' + words.join(', ') + ' (' + lookups + ' lookups of ' + id + ').'
      : 'No replica answered the lookups.';
  }

  async function addStudent(event) {
    event.preventDefault();
    clearFieldErrors();
    submit.disabled = true;
    setStatus(formStatus, 'pending', 'Saving\u2026');
    var student = {};
    new FormData(form).forEach(function (value, key) { student[key] = value; });
    var created = null;
    try {
      var res = await fetch(api, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(student)
      });
      var body = await res.json().catch(function () { return {}; });
      var instance = res.headers.get('X-Instance') || '?';
      if (res.status === 201) {
        form.reset();
        created = body.id;
        setStatus(formStatus, 'ok', 'Added ' + body.firstName + ' ' + body.lastName +
          ' (id ' + body.id + ') via ' + instance + '.');
      } else if (res.status === 422 && body.fields) {
        var other = showFieldErrors(body.fields);
        setStatus(formStatus, 'error', 'Please correct the highlighted fields.' +
          (other.length ? ' ' + other.join('; ') : ''));
      } else {
        setStatus(formStatus, 'error', body.message || body.error || 'HTTP ' + res.status);
      }
    } catch (err) {
      setStatus(formStatus, 'error', 'API unavailable \u2014 please try again.');
    } finally {
      submit.disabled = false;
    }
    if (created) {
      await proveEveryReplicaSees(created);
    }
  }

  form.addEventListener('submit', addStudent);
  poll();
})();
