// DeepGuard service worker: keeps the app shell available offline (network first, cache as fallback).
// The API is never cached: results and history always come from the server. The server puts a hash of the
// static files into the cache name, so every new version of the app gets a fresh cache.
"use strict";
const CACHE = "deepguard-__VERSION__";
const SHELL = [
  "/",
  "/assets/app.css",
  "/assets/boot.js",
  "/assets/app.js",
  "/assets/strings.json",
  "/assets/icons/icon.svg",
  "/assets/icons/icon-192.png",
  "/manifest.webmanifest",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("deepguard-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin || url.pathname.startsWith("/api/")) return;
  event.respondWith(
    fetch(req)
      .then((resp) => {
        if (resp.ok && resp.type === "basic") {
          const copy = resp.clone();
          caches.open(CACHE).then((c) => c.put(req, copy));
        }
        return resp;
      })
      .catch(() => caches.match(req, { ignoreSearch: true }).then((hit) => hit || (req.mode === "navigate" ? caches.match("/") : Response.error()))),
  );
});
