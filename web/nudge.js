/*!
 * nudge.js: the Nudge browser snippet.
 *
 *   <script src="https://CELL/nudge.js"></script>
 *   <script>
 *     const nudge = Nudge.init({ key: "pk_…", endpoint: "https://CELL" });
 *     nudge.track("add_to_cart", { product_id: "sku-1", price: 49.5, currency: "EUR", quantity: 1 });
 *     nudge.identify("customer-42", "ada@example.com"); // the address only if Nudge may e-mail them
 *     nudge.consent("email", true, "checkout_checkbox"); // what the shopper agreed to, and where
 *   </script>
 *
 * Batches events and sends them with retry (exponential backoff with jitter on network
 * errors, 429 and 5xx, honouring Retry-After; 4xx other than 429 drops the batch, since
 * resending cannot fix it). Keeps an anonymous shopper id in localStorage, detects exit
 * intent, gets a session token for the shopper and opens its WebSocket (reconnecting with
 * backoff, or within the server's jitter hint when it restarts, resuming after the last
 * intervention received), acknowledges every intervention and shows each once (ids kept in
 * sessionStorage), rendering them in a small banner. The store's announcements (to every
 * open page) show in a banner of their own at the top, unacknowledged (`onAnnouncement`
 * replaces it, as `onIntervention` replaces the other). No dependencies, no cookies.
 */
(function (global) {
  "use strict";

  var STORAGE_KEY = "nudge_shopper_id";
  var MAX_BATCH = 50;
  // Browsers refuse keepalive requests over 64 KiB; stay under it.
  var MAX_BATCH_BYTES = 60000;
  var FLUSH_MS = 250;
  var MAX_QUEUE = 1000;
  var SEEN_KEY = "nudge_seen_interventions";
  var MAX_SEEN = 50;

  function uuid() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID();
    var b = new Uint8Array(16);
    global.crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function shopperId() {
    try {
      var id = global.localStorage.getItem(STORAGE_KEY);
      if (!id) {
        id = "shp_" + uuid();
        global.localStorage.setItem(STORAGE_KEY, id);
      }
      return id;
    } catch (e) {
      return "shp_" + uuid(); // storage blocked: one id per page view
    }
  }

  function backoff(attempt) {
    var base = Math.min(30000, 500 * Math.pow(2, attempt));
    return base / 2 + Math.random() * base / 2;
  }

  // A store moved to another cell: the old cell answers 421 `tenant_moved` with the new
  // cell's URL, which is kept for a day so later pages go there directly.
  var MOVED_TTL_MS = 24 * 3600 * 1000;

  function movedEndpoint(key) {
    try {
      var raw = global.localStorage.getItem("nudge:cell:" + key);
      var saved = raw ? JSON.parse(raw) : null;
      if (saved && /^https?:\/\//.test(saved.url) && Date.now() - saved.at < MOVED_TTL_MS) return saved.url;
    } catch (e) { /* storage blocked: the configured endpoint */ }
    return null;
  }

  function forgetMove(client) {
    try { global.localStorage.removeItem("nudge:cell:" + client.key); } catch (e) { /* nothing kept */ }
    client.endpoint = client.configured;
    client.token = null;
  }

  // Whether `response` says the store moved; if so the client now talks to the new cell.
  function followMove(client, response) {
    if (response.status !== 421) return Promise.resolve(false);
    return response.json().then(function (body) {
      var url = body && body.error && body.error.code === "tenant_moved" && body.error.details && body.error.details.cell_url;
      if (!url || !/^https?:\/\//.test(url)) return false;
      // Never bounce between cells: a few different cells in a row at most (the count
      // resets once a batch goes through).
      url = url.replace(/\/+$/, "");
      if (url !== client.lastMove) {
        if (client.moves >= 3) return false;
        client.moves += 1;
        client.lastMove = url;
      }
      client.endpoint = url.replace(/\/+$/, "");
      // A token is the old cell's: the new cell issues its own.
      client.token = null;
      try {
        global.localStorage.setItem("nudge:cell:" + client.key, JSON.stringify({ url: client.endpoint, at: Date.now() }));
      } catch (e) { /* memory only */ }
      client.onStatus({ type: "moved", endpoint: client.endpoint });
      return true;
    }, function () { return false; });
  }

  function Client(options) {
    if (!options || !options.key || !options.endpoint) throw new Error("Nudge.init needs { key, endpoint }");
    this.key = options.key;
    this.configured = options.endpoint.replace(/\/+$/, "");
    this.endpoint = movedEndpoint(options.key) || this.configured;
    this.moves = 0;
    this.lastMove = null;
    this.shopperId = options.shopperId || shopperId();
    var client = this;
    // The default shows the message in a banner and reports clicks and dismissals; a store's
    // own renderer may report them with client.feedback(id, "clicked" | "dismissed").
    this.onIntervention = options.onIntervention || function (msg) {
      render(msg, function (action) { client.feedback(msg.intervention_id, action); });
    };
    // Announcements go to every open page of the shop: shown in a banner of their own at the
    // top (an intervention's stays where it is), with no feedback, since they are the
    // store's own message and not a decision to report on. `onAnnouncement` replaces it.
    this.onAnnouncement = options.onAnnouncement || function (msg) { render(msg, null, ANNOUNCEMENT_BOX); };
    this.announced = [];
    this.onStatus = options.onStatus || function () {};
    this.queue = [];
    this.inFlight = false;
    this.attempt = 0;
    this.timer = null;
    this.backoffUntil = 0;
    this.socket = null;
    this.socketAttempt = 0;
    this.seen = loadSeen();
    this.lastId = this.seen.length ? this.seen[this.seen.length - 1] : null;
    this.token = null;
    this.tokenExpires = 0;
    this.exitArmed = true;
    this.timeZone = timeZone();
    if (options.connect !== false) this.connect();
    if (options.exitIntent !== false) this.watchExitIntent();
  }

  // The browser's time zone (IANA), for quiet hours kept in the shopper's own time; left
  // out when the browser names none or something that is not a zone name.
  function timeZone() {
    try {
      var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      return typeof zone === "string" && /^[A-Za-z][A-Za-z0-9_+\-]*(\/[A-Za-z0-9_+\-]+){0,2}$/.test(zone) ? zone : undefined;
    } catch (e) {
      return undefined;
    }
  }

  Client.prototype.track = function (type, properties) {
    if (this.queue.length >= MAX_QUEUE) this.queue.splice(this.inFlight ? this.inFlight.length : 0, 1); // bounded: drop the oldest unsent
    var event = {
      event_id: uuid(),
      type: type,
      shopper_id: this.shopperId,
      occurred_at: new Date().toISOString(),
      properties: properties || {}
    };
    if (this.timeZone) event.time_zone = this.timeZone;
    this.queue.push(event);
    this.schedule(type === "exit_intent" ? 0 : FLUSH_MS);
  };

  // What the shopper did with an intervention ("shown", "clicked", "dismissed"), for the
  // store's lift reports.
  Client.prototype.feedback = function (interventionId, action) {
    this.track("intervention", { intervention_id: interventionId, action: action });
  };

  // The shopper logged in: the store's customer reference and, when the store lets Nudge
  // e-mail them, their address.
  Client.prototype.identify = function (customerRef, email) {
    var properties = { customer_ref: customerRef };
    if (email) properties.email = email;
    this.track("identify", properties);
  };

  // The shopper agreed to (or refused) messages on a channel ("email", "on_site",
  // "webhook"); `source` says where, for the record.
  Client.prototype.consent = function (channel, granted, source) {
    this.track("consent", { channel: channel, granted: !!granted, source: source || "snippet" });
  };

  Client.prototype.schedule = function (delay) {
    var self = this;
    // While backing off (after a failure or a Retry-After), nothing goes out earlier.
    delay = Math.max(delay, this.backoffUntil - Date.now());
    if (this.timer !== null) {
      if (delay > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(function () { self.timer = null; self.flush(); }, Math.max(0, delay));
  };

  function take(queue) {
    var batch = [];
    var bytes = 20;
    for (var i = 0; i < queue.length && batch.length < MAX_BATCH; i++) {
      var size = JSON.stringify(queue[i]).length + 1;
      if (batch.length > 0 && bytes + size > MAX_BATCH_BYTES) break;
      batch.push(queue[i]);
      bytes += size;
    }
    return batch;
  }

  Client.prototype.flush = function () {
    if (this.inFlight || this.queue.length === 0) return;
    var self = this;
    var batch = take(this.queue);
    var body = JSON.stringify({ events: batch });
    this.inFlight = batch;
    fetch(this.endpoint + "/v1/events", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + this.key },
      body: body,
      // keepalive lets the last batch outlive the page; browsers cap it at 64 KiB.
      keepalive: body.length < 65000,
      mode: "cors"
    }).then(function (response) {
      if (response.status === 421) {
        // Moved: the same batch (same event ids) goes to the store's new cell; the batch
        // stays in flight until then, so nothing sends it twice meanwhile.
        followMove(self, response).then(function (moved) {
          self.inFlight = false;
          if (moved) {
            self.schedule(0);
            return;
          }
          self.queue.splice(0, batch.length);
          self.onStatus({ type: "rejected", status: 421, error: { code: "tenant_moved" } });
          if (self.queue.length) self.schedule(0);
        });
        return;
      }
      self.inFlight = false;
      if (response.ok) {
        self.queue.splice(0, batch.length);
        self.attempt = 0;
        self.moves = 0;
        self.backoffUntil = 0;
        self.onStatus({ type: "sent", count: batch.length });
        if (self.queue.length) self.schedule(0);
        return;
      }
      if (response.status === 429 || response.status >= 500) {
        var after = Number(response.headers.get("Retry-After"));
        self.retry(after > 0 ? after * 1000 : backoff(self.attempt++));
        return;
      }
      // Resending cannot fix a 4xx: drop the batch and say why.
      self.queue.splice(0, batch.length);
      response.json().then(function (body) {
        self.onStatus({ type: "rejected", status: response.status, error: body && body.error });
      }, function () {});
      if (self.queue.length) self.schedule(0);
    }, function () {
      self.inFlight = false;
      // A remembered cell that no longer answers: back to the configured one.
      if (self.endpoint !== self.configured && self.attempt >= 3) forgetMove(self);
      self.retry(backoff(self.attempt++));
    });
  };

  Client.prototype.retry = function (delay) {
    this.onStatus({ type: "retrying", in_ms: Math.round(delay) });
    this.backoffUntil = Date.now() + delay;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.schedule(delay);
  };

  // Socket close codes (see the gateway's documentation): what each asks the client to do.
  var CLOSE_STOP = { 1008: "invalid_message", 1009: "message_too_big", 4003: "not_authorized", 4006: "session_token_foreign" };
  var CLOSE_NEW_TOKEN = { 4001: true, 4002: true, 4005: true };

  // Intervention ids already shown in this tab's session (bounded), and the last one
  // received: a reconnect resumes after it and anything replayed twice is shown once.
  function loadSeen() {
    try {
      var raw = global.sessionStorage.getItem(SEEN_KEY);
      var list = raw ? JSON.parse(raw) : [];
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return [];
    }
  }

  Client.prototype.remember = function (id) {
    this.seen.push(id);
    if (this.seen.length > MAX_SEEN) this.seen.splice(0, this.seen.length - MAX_SEEN);
    this.lastId = id;
    try { global.sessionStorage.setItem(SEEN_KEY, JSON.stringify(this.seen)); } catch (e) { /* storage blocked: memory only */ }
  };

  // A session token names this shopper to the socket; ingest signs it for this store.
  Client.prototype.session = function () {
    var self = this;
    if (this.token && this.tokenExpires - Date.now() > 30000) return Promise.resolve(this.token);
    return fetch(this.endpoint + "/v1/sessions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + this.key },
      body: JSON.stringify({ shopper_id: this.shopperId }),
      mode: "cors"
    }).then(function (response) {
      if (response.status === 201) {
        return response.json().then(function (body) {
          self.token = body.token;
          self.tokenExpires = Date.parse(body.expires_at) || 0;
          return self.token;
        });
      }
      if (response.status === 421) {
        return followMove(self, response).then(function (moved) {
          if (moved) return self.session();
          var error = new Error("session refused: 421");
          throw error;
        });
      }
      var error = new Error("session refused: " + response.status);
      // A 4xx other than 429 will not change by asking again.
      error.permanent = response.status >= 400 && response.status < 500 && response.status !== 429;
      throw error;
    });
  };

  Client.prototype.connect = function () {
    var self = this;
    this.session().then(function (token) {
      self.open(token);
    }, function (error) {
      self.onStatus({ type: "socket_refused", reason: error.message });
      if (!error.permanent) self.reconnect(backoff(self.socketAttempt++));
    });
  };

  Client.prototype.reconnect = function (delay) {
    var self = this;
    setTimeout(function () { self.connect(); }, delay);
  };

  Client.prototype.open = function (token) {
    var self = this;
    var url = this.endpoint.replace(/^http/, "ws") + "/v1/ws?key=" + encodeURIComponent(this.key) +
      "&token=" + encodeURIComponent(token) + (this.lastId ? "&last_id=" + encodeURIComponent(this.lastId) : "");
    var socket = new WebSocket(url);
    var opened = false;
    this.socket = socket;
    socket.onopen = function () { opened = true; self.onStatus({ type: "socket_open" }); };
    socket.onmessage = function (m) {
      var msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      // Backoff resets only once the server has accepted the socket: a socket opened and
      // then refused (1013, 4002) keeps backing off instead of hammering the server.
      if (msg.type === "ready") self.socketAttempt = 0;
      if (msg.type === "intervention") {
        // Acknowledged every time, shown once: delivery is at least once.
        socket.send(JSON.stringify({ type: "ack", intervention_id: msg.intervention_id }));
        if (self.seen.indexOf(msg.intervention_id) !== -1) return;
        self.remember(msg.intervention_id);
        self.onIntervention(msg);
        self.feedback(msg.intervention_id, "shown");
      }
      // Not acknowledged and not kept: an announcement is never replayed, and it must not
      // become the id a reconnect resumes after. Shown once per page, should a store send
      // one again after an error.
      if (msg.type === "announcement" && self.announced.indexOf(msg.announcement_id) === -1) {
        self.announced.push(msg.announcement_id);
        if (self.announced.length > MAX_SEEN) self.announced.shift();
        self.onAnnouncement(msg);
      }
    };
    socket.onclose = function (e) {
      self.onStatus({ type: "socket_closed", code: e.code, reason: e.reason });
      if (CLOSE_STOP[e.code]) return;
      // A refused upgrade cannot be read by a page (only 1006 arrives): the next attempt asks
      // for a new session, whose answer says why (a store that moved: where it is now).
      if (CLOSE_NEW_TOKEN[e.code] || !opened) self.token = null;
      if (e.code === 4009) {
        // The store moved to another cell: a new session (refused with the new cell's
        // address) takes the socket there, spread out as a whole store's sockets go at once.
        self.token = null;
        self.reconnect(Math.random() * 1000);
        return;
      }
      if (e.code === 1012) {
        // The server is restarting: come back soon, spread out, to another replica.
        var hint = /reconnect_jitter_ms=(\d+)/.exec(e.reason || "");
        var jitter = hint ? Number(hint[1]) : 5000;
        self.reconnect(Math.random() * jitter);
        return;
      }
      self.reconnect(backoff(self.socketAttempt++));
    };
  };

  Client.prototype.watchExitIntent = function () {
    var self = this;
    // The pointer leaving through the top of the window is heading for the tab bar or the
    // address bar: the classic desktop exit signal. Re-armed once it comes back.
    document.addEventListener("mouseout", function (e) {
      if (!e.relatedTarget && e.clientY <= 0 && self.exitArmed) {
        self.exitArmed = false;
        self.track("exit_intent", {});
      }
    });
    document.addEventListener("mouseover", function () { self.exitArmed = true; });
  };

  var INTERVENTION_BOX = { id: "nudge-intervention", edge: "bottom" };
  var ANNOUNCEMENT_BOX = { id: "nudge-announcement", edge: "top" };

  function render(msg, feedback, where) {
    where = where || INTERVENTION_BOX;
    var box = document.getElementById(where.id);
    if (!box) {
      box = document.createElement("div");
      box.id = where.id;
      box.setAttribute("role", "status");
      box.style.cssText = "position:fixed;left:50%;" + where.edge + ":24px;transform:translateX(-50%);z-index:2147483647;" +
        "max-width:420px;padding:16px 20px;border-radius:12px;background:#1f2937;color:#fff;" +
        "font:15px/1.4 system-ui,sans-serif;box-shadow:0 10px 30px rgba(0,0,0,.3)";
      document.body.appendChild(box);
    }
    box.textContent = "";
    var title = document.createElement("strong");
    title.textContent = msg.title;
    var body = document.createElement("div");
    body.textContent = msg.body;
    var close = document.createElement("button");
    close.textContent = "×";
    close.setAttribute("aria-label", "Dismiss");
    close.style.cssText = "position:absolute;top:6px;right:10px;background:none;border:0;color:#fff;font-size:18px;cursor:pointer";
    close.onclick = function (e) {
      e.stopPropagation();
      box.remove();
      if (feedback) feedback("dismissed");
    };
    box.onclick = function () { if (feedback) feedback("clicked"); };
    box.appendChild(title);
    box.appendChild(body);
    box.appendChild(close);
  }

  global.Nudge = { init: function (options) { return new Client(options); } };
})(window);
