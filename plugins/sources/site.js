/* Boomerang site tracking (served at /t.js). No dependencies, no build step.
 *
 *   boomerang.track("product.viewed", {product: {...}})
 *   boomerang.cart({items: [...], total: 79.9, url: "https://shop.example/cart"})
 *   boomerang.identify({email: "anna@example.com"})   // a claim: never merges
 *   boomerang.identify({token: "<sealed by the shop's server>"})   // links to that customer
 *
 * Calls made before this file loaded (the stub's `boomerang.q`) are replayed. A first-party
 * visitor id is kept in localStorage (and a cookie, for pages where storage is off); while the
 * tab is visible and someone used the page within the last 30 minutes, a heartbeat says the
 * visitor is still here, and on page hide one last one goes by navigator.sendBeacon.
 */
(function (window, document) {
  "use strict";
  var existing = window.boomerang || {};
  if (existing.loaded) return;

  var TRACKED = ["page.viewed", "product.viewed", "category.viewed", "cart.updated", "checkout.started"];
  var ID = /^[A-Za-z0-9_-]{16,64}$/;
  var KEY = "boomerang_vid";
  var INPUT_IDLE = 30 * 60 * 1000; // a visible tab nobody touched for this long is not a visit
  var script = document.currentScript;
  var endpoint = script && script.src ? script.src.replace(/\/t\.js(\?.*)?$/, "/t") : "/t";
  var beat = 30000; // the daemon's answers say how often it wants a heartbeat
  var lastInput = now();
  var timer = null;
  var hidden = false;
  var queue = null;

  function now() {
    return new Date().getTime();
  }

  function randomId() {
    var bytes = new Uint8Array(16);
    var text = "";
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    for (var i = 0; i < bytes.length; i++) text += ("0" + bytes[i].toString(16)).slice(-2);
    return text;
  }

  function visitorId() {
    var id = null;
    try {
      id = window.localStorage.getItem(KEY);
    } catch (e) { /* storage switched off: the cookie below */ }
    if (!id || !ID.test(id)) {
      var found = document.cookie.match(/(?:^|;\s*)boomerang_vid=([A-Za-z0-9_-]{16,64})/);
      id = found ? found[1] : randomId();
    }
    try {
      window.localStorage.setItem(KEY, id);
    } catch (e) { /* the cookie holds it */ }
    document.cookie = KEY + "=" + id + "; path=/; max-age=31536000; SameSite=Lax";
    return id;
  }

  var visitor = visitorId();

  function adopt(answer) {
    if (!answer || typeof answer.beat !== "number" || answer.beat < 1 || answer.beat * 1000 === beat) return;
    beat = answer.beat * 1000;
    if (timer) {
      window.clearTimeout(timer);
      timer = window.setTimeout(heartbeat, beat);
    }
  }

  // text/plain keeps the request "simple": no CORS preflight, and sendBeacon accepts it.
  function send(body, beacon) {
    body.v = visitor;
    body.id = randomId();
    var text = JSON.stringify(body);
    if (beacon && navigator.sendBeacon && navigator.sendBeacon(endpoint, new Blob([text], {type: "text/plain"}))) {
      return;
    }
    if (!window.fetch) {
      var request = new XMLHttpRequest();
      request.open("POST", endpoint, true);
      request.setRequestHeader("Content-Type", "text/plain");
      request.send(text);
      return;
    }
    function post() {
      return window.fetch(endpoint, {
        method: "POST", body: text, keepalive: true, credentials: "omit", mode: "cors",
        headers: {"Content-Type": "text/plain"}
      }).then(function (response) {
        return response.ok ? response.json().then(adopt) : null;
      }, function () { /* offline: the next call tries again */ });
    }
    // One after the other, so the daemon hears them in the order the page made them.
    queue = queue ? queue.then(post) : post();
  }

  function track(type, data) {
    if (TRACKED.indexOf(type) < 0) throw new Error("boomerang.track: unknown event type " + type);
    if (data !== undefined && (data === null || typeof data !== "object")) {
      throw new Error("boomerang.track: data must be an object");
    }
    active();
    send({type: type, data: data || {}});
  }

  function cart(value) {
    track("cart.updated", {cart: value});
  }

  function identify(who) {
    if (!who || (typeof who.email !== "string" && typeof who.token !== "string")) {
      throw new Error("boomerang.identify: give {email: ...} or {token: ...}");
    }
    active();
    send(typeof who.token === "string" ? {type: "identify", token: who.token} : {type: "identify", email: who.email});
  }

  function visible() {
    return document.visibilityState === undefined || document.visibilityState === "visible";
  }

  function heartbeat() {
    timer = null;
    if (!visible()) return;
    if (now() - lastInput < INPUT_IDLE) send({type: "site.active"});
    timer = window.setTimeout(heartbeat, beat);
  }

  function active() {
    lastInput = now();
  }

  function leaving() {
    if (hidden) return;
    hidden = true;
    if (timer) window.clearTimeout(timer);
    timer = null;
    send({type: "site.active"}, true);
  }

  function back() {
    hidden = false;
    active();
    if (!timer) heartbeat();
  }

  var inputs = ["pointerdown", "keydown", "scroll", "touchstart", "mousemove"];
  for (var i = 0; i < inputs.length; i++) window.addEventListener(inputs[i], active, {passive: true});
  document.addEventListener("visibilitychange", function () {
    if (visible()) back(); else leaving();
  });
  window.addEventListener("pagehide", leaving);
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) back();
  });

  var calls = existing.q || [];
  window.boomerang = {loaded: true, visitor: visitor, track: track, cart: cart, identify: identify};
  heartbeat();
  for (var j = 0; j < calls.length; j++) {
    try {
      window.boomerang[calls[j][0]].apply(null, calls[j][1]);
    } catch (e) {
      if (window.console) window.console.error(e);
    }
  }
})(window, document);
