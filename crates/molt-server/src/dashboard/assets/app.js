// Molt dashboard: live regions, confirmations, busy buttons. No framework;
// every page works without this script, it only saves reloads and clicks.
(function () {
  'use strict';

  // ---- Live regions ----
  // The page names its live endpoint in data-live; each [data-region] has
  // a data-hash. We ask again as soon as an answer came, sending the hashes
  // we show: the server holds the request until a region changes (it is
  // woken by deploy events), so updates arrive at once without polling. A
  // region's HTML is swapped only when its hash changed, so focus and
  // scroll stay put the rest of the time.
  var main = document.querySelector('[data-live]');
  // Once the page is being left (a form was sent, a link followed), the
  // poller must not navigate too: its "App gone" redirect could replace
  // the form's answer, and the notice that answer carried would be lost.
  var leaving = false;
  window.addEventListener('beforeunload', function () {
    leaving = true;
  });
  window.addEventListener('pageshow', function () {
    leaving = false;
  });
  if (main) {
    var url = main.getAttribute('data-live');
    var timer = null;
    var failures = 0;
    var schedule = function (ms) {
      clearTimeout(timer);
      timer = setTimeout(poll, ms);
    };
    // What the page shows, as the server compares it: name=hash, sorted.
    var shown = function () {
      var pairs = [];
      document.querySelectorAll('[data-region]').forEach(function (el) {
        pairs.push(el.getAttribute('data-region') + '=' + el.getAttribute('data-hash'));
      });
      return pairs.sort().join(',');
    };
    var poll = function () {
      if (leaving) return;
      if (document.hidden) {
        schedule(2000);
        return;
      }
      fetch(url, {
        headers: { Accept: 'application/json', 'X-Molt-Live': shown() },
        credentials: 'same-origin',
        cache: 'no-store'
      })
        .then(function (r) {
          if (leaving) throw new Error('leaving');
          // Sent to the login page: the session ended.
          if (r.redirected) {
            window.location.reload();
            throw new Error('logged out');
          }
          if (!r.ok) throw new Error('HTTP ' + r.status);
          return r.json();
        })
        .then(function (data) {
          if (leaving) return;
          failures = 0;
          main.removeAttribute('data-offline');
          if (data.gone) {
            window.location.href = data.gone;
            return;
          }
          var regions = data.regions || {};
          Object.keys(regions).forEach(function (name) {
            var el = document.querySelector('[data-region="' + name + '"]');
            var r = regions[name];
            if (el && el.getAttribute('data-hash') !== r.hash) {
              el.innerHTML = r.html;
              el.setAttribute('data-hash', r.hash);
            }
          });
          main.setAttribute('data-active', data.active ? 'true' : 'false');
          // The next request is held by the server; the short pause only
          // bounds the rate when every answer differs.
          schedule(250);
        })
        .catch(function () {
          failures += 1;
          if (failures > 2) main.setAttribute('data-offline', 'true');
          schedule(Math.min(10000, 1000 * failures));
        });
    };
    schedule(500);
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden) schedule(0);
    });
  }

  // ---- Forms ----
  // Delegated, so forms inside refreshed regions behave the same.
  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    var msg = form.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) {
      ev.preventDefault();
      return;
    }
    // The button that sent the form (a form may have several).
    var btn = ev.submitter || form.querySelector('button[type="submit"]');
    if (btn) {
      var busy = form.getAttribute('data-busy');
      if (busy) {
        btn.setAttribute('data-label', btn.textContent);
        btn.textContent = busy;
      }
      // After the submit has been sent: a second click cannot send it again.
      setTimeout(function () {
        btn.disabled = true;
      }, 0);
    }
  });

  // Back/forward cache: buttons disabled on submit come back usable.
  window.addEventListener('pageshow', function (ev) {
    if (!ev.persisted) return;
    document.querySelectorAll('button[disabled]').forEach(function (b) {
      if (b.hasAttribute('data-label')) b.textContent = b.getAttribute('data-label');
      b.disabled = false;
    });
  });

  // Delete: the button works only once the App's name is typed exactly.
  document.querySelectorAll('form[data-confirm-name]').forEach(function (form) {
    var name = form.getAttribute('data-confirm-name');
    var input = form.querySelector('input[name="confirm"]');
    var btn = form.querySelector('button[type="submit"]');
    if (!input || !btn) return;
    var sync = function () {
      btn.disabled = input.value.trim() !== name;
    };
    input.addEventListener('input', sync);
    sync();
  });

  // Secret checkbox: hide the value as it is typed.
  var secret = document.getElementById('env-ns');
  var value = document.getElementById('env-nv');
  if (secret && value) {
    var syncSecret = function () {
      value.type = secret.checked ? 'password' : 'text';
    };
    secret.addEventListener('change', syncSecret);
    syncSecret();
  }
})();
