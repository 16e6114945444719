/* Boomerang web push service worker: shows each notification and opens its link on click.
   Register it as it is, or add importScripts("<public_url>/push/sw.js") to your own. */
const BOOMERANG_URL = __PUBLIC_URL__;
const BOOMERANG_PUSH_KEY = __PUBLIC_KEY__;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (error) {
    data = { body: event.data ? event.data.text() : "" };
  }
  const options = {
    body: data.body || "",
    data: { url: data.url || "/", click: data.click || null },
  };
  if (data.icon) options.icon = data.icon;
  if (data.id) options.tag = data.id;  // a message pushed twice shows once
  event.waitUntil(self.registration.showNotification(data.title || "", options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  const url = new URL(data.url || "/", self.location.origin).href;
  const work = [self.clients.openWindow(url)];
  if (data.click) {
    work.push(
      fetch(BOOMERANG_URL + "/push/click", {
        method: "POST",
        headers: { Authorization: "Bearer " + data.click },
        keepalive: true,
      }).catch(() => undefined)
    );
  }
  event.waitUntil(Promise.all(work));
});
